#!/bin/sh
# The compose trial's TLS material and secrets (deploy/compose.yaml), made once on the machine that runs
# it: a trial CA, one certificate per service, the TURN secret, Redis's ACL file and deploy/.env.
# For a trial only: in a real set-up the internal CA lives offline and the public names get certificates
# from a public CA (deploy/README.md, "TLS everywhere"). Needs openssl. Run it again to start afresh.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tls="$here/tls"
secrets="$here/secrets"
umask 077
rm -rf "$tls" "$secrets"
mkdir -p "$tls" "$secrets/redis" "$secrets/postgres"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 -subj "/CN=kijkmee trial CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null

# cert DIR NAME CN SAN [clientAuth]: DIR/NAME.pem and DIR/NAME.key signed by the trial CA, and DIR/ca.pem.
cert() {
    dir="$tls/$1"; mkdir -p "$dir"
    usage=serverAuth; [ "${5:-}" = client ] && usage=clientAuth
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$3" \
        -keyout "$dir/$2.key" -out "$dir/$2.csr" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$4" "$usage" > "$dir/$2.ext"
    openssl x509 -req -in "$dir/$2.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial -days 90 \
        -extfile "$dir/$2.ext" -out "$dir/$2.pem" 2>/dev/null
    rm "$dir/$2.csr" "$dir/$2.ext"
    cp "$tls/ca.pem" "$dir/ca.pem"
}

for n in 1 2; do
    cert "signal-$n" node "signal-$n.kijkmee.internal" "DNS:signal-$n.kijkmee.internal,DNS:signaling.kijkmee.internal"
    cert "signal-$n" pg-client kijkmee "DNS:kijkmee" client        # PostgreSQL maps CN=kijkmee to the role
    cert "relay-$n" turns "relay-$n.example.nl" "DNS:relay-$n.example.nl,DNS:localhost,IP:127.0.0.1"
    cert "relay-$n-health" node "relay-$n.kijkmee.internal" "DNS:relay-$n.kijkmee.internal"
done
cert postgres node db.kijkmee.internal "DNS:db.kijkmee.internal"
cert redis node redis.kijkmee.internal "DNS:redis.kijkmee.internal"
cert proxy public localhost "DNS:localhost,DNS:call.example.nl,IP:127.0.0.1"

openssl rand -base64 32 > "$secrets/turn-secret"
openssl rand -hex 32 > "$secrets/postgres/password"     # PostgreSQL's superuser, unused (see pg_hba.conf)
redis_password=$(openssl rand -hex 24)
printf 'user default off\nuser kijkmee on >%s ~kijkmee:* &kijkmee:* +@all -@dangerous\n' "$redis_password" \
    > "$secrets/redis/users.acl"
printf 'REDIS_PASSWORD=%s\n' "$redis_password" > "$here/../.env"

# The kijkmee containers run as uid 10001 and read their keys and the TURN secret themselves.
if [ "$(id -u)" = 0 ]; then
    chown -R 10001:10001 "$tls"/signal-* "$tls"/relay-1 "$tls"/relay-2 "$secrets/turn-secret"
else
    echo "note: run as root (or chown -R 10001:10001 compose/tls/signal-* compose/tls/relay-[12]" \
         "compose/secrets/turn-secret) so the containers can read their keys" >&2
fi
echo "made $tls, $secrets and deploy/.env (trial CA valid 90 days; its key stays in $tls/ca.key)"
