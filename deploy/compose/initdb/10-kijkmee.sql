-- The compose trial's database: kijkmee's own role (not a superuser) owns it; it logs in with its client
-- certificate over TLS only (compose/pg_hba.conf). Run once, by the image's entrypoint, on first start.
CREATE ROLE kijkmee LOGIN;
CREATE DATABASE kijkmee OWNER kijkmee;
