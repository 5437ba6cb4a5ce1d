/* pump: the data-plane half of the relay_vs_coturn load generator.
 *
 * The Python driver (run.py) opens one UDP socket per TURN session, does Allocate,
 * CreatePermission and ChannelBind with the project's STUN codec, connect()s each socket to
 * the server and hands the descriptors to this program, together with one "peer" socket that
 * every relayed address sends to. pump then, in one thread:
 *   - sends ChannelData messages round-robin over the sessions, paced to RATE messages/s
 *     (RATE 0: closed loop, at most WINDOW messages in flight);
 *   - echoes every datagram that reaches the peer socket back to its source (the relayed
 *     address), with recvmmsg/sendmmsg, like turnutils_peer does with recvfrom/sendto;
 *   - receives the echoes as ChannelData on the session sockets and records each round trip
 *     (the send time travels in the payload, CLOCK_MONOTONIC ns).
 * It prints one JSON object. Same program, same work, for every server under test.
 *
 * Every message carries a random tag of this run: echoes of an earlier run on the same sessions (still
 * queued in a slow server) count as "stale", not as received.
 *
 * usage: pump PEER_FD SIZE RATE WINDOW DURATION DRAIN WARMUP CHANNEL FD [FD...]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_EVENTS 512
#define SEND_BURST 512

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 10) {
        fprintf(stderr, "usage: pump PEER_FD SIZE RATE WINDOW DURATION DRAIN WARMUP CHANNEL FD [FD...]\n");
        return 2;
    }
    int peer_fd = atoi(argv[1]);
    int size = atoi(argv[2]);
    double rate = atof(argv[3]);
    uint64_t window = strtoull(argv[4], NULL, 10);
    double duration = atof(argv[5]), drain = atof(argv[6]), warmup = atof(argv[7]);
    int channel = (int)strtol(argv[8], NULL, 0);
    int n = argc - 9;
    int *fds = calloc((size_t)n, sizeof(int));
    for (int i = 0; i < n; i++) fds[i] = atoi(argv[9 + i]);
    if (size < 16 || size > 1400) {
        fprintf(stderr, "pump: SIZE must be 16..1400\n");
        return 2;
    }

    int ep = epoll_create1(0);
    struct epoll_event ev;
    ev.events = EPOLLIN;
    ev.data.u32 = 0xFFFFFFFFu;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, peer_fd, &ev) < 0) { perror("epoll_ctl peer"); return 1; }
    for (int i = 0; i < n; i++) {
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t)i;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0) { perror("epoll_ctl client"); return 1; }
    }

    unsigned char out[4 + 1400];
    memset(out, 7, sizeof out);
    out[0] = (unsigned char)(channel >> 8);
    out[1] = (unsigned char)channel;
    out[2] = (unsigned char)(size >> 8);
    out[3] = (unsigned char)size;
    size_t frame = 4 + (size_t)size;  /* size is a multiple of 4 in this bench: no padding */

    /* peer echo buffers */
    static unsigned char pbuf[BATCH][2048];
    struct mmsghdr pmsg[BATCH];
    struct iovec piov[BATCH];
    struct sockaddr_storage paddr[BATCH];
    unsigned char rbuf[2048];

    size_t cap = rate > 0 ? (size_t)(rate * duration * 1.05) + 4096 : 1u << 20;
    uint32_t *rtts = malloc(cap * sizeof(uint32_t));
    size_t nrtt = 0;

    uint64_t sent = 0, received = 0, stale = 0, send_fail = 0, peer_rx = 0, peer_tx = 0, peer_fail = 0, bad = 0;
    uint64_t t0 = now_ns();
    uint32_t tag = (uint32_t)(t0 ^ (t0 >> 32) ^ ((uint64_t)getpid() << 16));
    memcpy(out + 16, &tag, 4);
    uint64_t send_end = t0 + (uint64_t)(duration * 1e9);
    uint64_t warm_end = t0 + (uint64_t)(warmup * 1e9);
    uint64_t hard_end = send_end + (uint64_t)(drain * 1e9);
    uint64_t last_send = t0;
    double ns_per_msg = rate > 0 ? 1e9 / rate : 0;
    struct epoll_event events[MAX_EVENTS];
    struct rusage ru0;
    getrusage(RUSAGE_SELF, &ru0);

    for (;;) {
        uint64_t now = now_ns();
        struct timespec timeout;
        uint64_t wait_ns;
        if (now < send_end) {
            uint64_t due = rate > 0 ? (uint64_t)((double)(now - t0) / ns_per_msg) + 1 : received + window;
            int burst = 0;
            while (sent < due && burst < SEND_BURST) {
                int s = (int)(sent % (uint64_t)n);
                uint64_t t = now_ns();
                memcpy(out + 4, &t, 8);
                uint32_t seq = (uint32_t)sent;
                memcpy(out + 12, &seq, 4);
                if (send(fds[s], out, frame, MSG_DONTWAIT) == (ssize_t)frame) {
                    sent++;
                    last_send = t;
                } else {
                    send_fail++;
                    sent++;  /* counted as sent and lost: the load asked for it */
                }
                burst++;
            }
            if (sent < due) {
                wait_ns = 0;
            } else if (rate > 0) {
                uint64_t next = t0 + (uint64_t)((double)sent * ns_per_msg);
                wait_ns = next > now ? next - now : 0;
            } else {
                wait_ns = 1000000;
            }
            if (now + wait_ns > send_end) wait_ns = send_end - now;
        } else {
            if (received >= sent - send_fail || now >= hard_end) break;
            wait_ns = hard_end - now;
        }
        timeout.tv_sec = (time_t)(wait_ns / 1000000000ull);
        timeout.tv_nsec = (long)(wait_ns % 1000000000ull);
        int ready = epoll_pwait2(ep, events, MAX_EVENTS, &timeout, NULL);
        if (ready < 0) {
            if (errno == EINTR) continue;
            perror("epoll_pwait2");
            return 1;
        }
        for (int e = 0; e < ready; e++) {
            uint32_t who = events[e].data.u32;
            if (who == 0xFFFFFFFFu) {
                for (int round = 0; round < 8; round++) {
                    for (int i = 0; i < BATCH; i++) {
                        piov[i].iov_base = pbuf[i];
                        piov[i].iov_len = sizeof pbuf[i];
                        memset(&pmsg[i].msg_hdr, 0, sizeof pmsg[i].msg_hdr);
                        pmsg[i].msg_hdr.msg_iov = &piov[i];
                        pmsg[i].msg_hdr.msg_iovlen = 1;
                        pmsg[i].msg_hdr.msg_name = &paddr[i];
                        pmsg[i].msg_hdr.msg_namelen = sizeof paddr[i];
                    }
                    int got = recvmmsg(peer_fd, pmsg, BATCH, MSG_DONTWAIT, NULL);
                    if (got <= 0) break;
                    peer_rx += (uint64_t)got;
                    for (int i = 0; i < got; i++) piov[i].iov_len = pmsg[i].msg_len;
                    int done = 0;
                    while (done < got) {
                        int put = sendmmsg(peer_fd, pmsg + done, (unsigned)(got - done), MSG_DONTWAIT);
                        if (put <= 0) { peer_fail += (uint64_t)(got - done); break; }
                        done += put;
                    }
                    peer_tx += (uint64_t)done;
                    if (got < BATCH) break;
                }
            } else {
                int fd = fds[who];
                for (int k = 0; k < 64; k++) {
                    ssize_t len = recv(fd, rbuf, sizeof rbuf, MSG_DONTWAIT);
                    if (len < 0) break;
                    uint64_t t = now_ns();
                    if (len < 4 + 16 || (rbuf[0] & 0xC0) != 0x40) { bad++; continue; }
                    if (memcmp(rbuf + 16, &tag, 4) != 0) { stale++; continue; }
                    received++;
                    uint64_t ts;
                    memcpy(&ts, rbuf + 4, 8);
                    if (ts >= warm_end && ts < send_end && t > ts) {
                        if (nrtt == cap) {
                            cap *= 2;
                            rtts = realloc(rtts, cap * sizeof(uint32_t));
                        }
                        uint64_t d = t - ts;
                        rtts[nrtt++] = d > 0xFFFFFFFFull ? 0xFFFFFFFFu : (uint32_t)d;
                    }
                }
            }
        }
    }
    uint64_t t_end = now_ns();
    struct rusage ru1;
    getrusage(RUSAGE_SELF, &ru1);
    double cpu_user = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6;
    double cpu_sys = (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) + (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    qsort(rtts, nrtt, sizeof(uint32_t), cmp_u32);
    double mean = 0;
    for (size_t i = 0; i < nrtt; i++) mean += rtts[i];
    mean = nrtt ? mean / (double)nrtt : 0;
#define PCT(p) (nrtt ? (double)rtts[(size_t)((double)(nrtt - 1) * (p))] / 1000.0 : -1.0)
    printf("{\"sessions\": %d, \"size\": %d, \"rate\": %.1f, \"window\": %llu, \"sent\": %llu, \"send_fail\": %llu, "
           "\"received\": %llu, \"stale\": %llu, \"peer_rx\": %llu, \"peer_tx\": %llu, \"peer_fail\": %llu, \"bad\": %llu, "
           "\"send_seconds\": %.6f, \"total_seconds\": %.6f, \"cpu_user\": %.6f, \"cpu_sys\": %.6f, "
           "\"rtt_us\": {\"count\": %zu, \"mean\": %.2f, \"p50\": %.2f, \"p90\": %.2f, \"p99\": %.2f, \"p999\": %.2f, \"max\": %.2f}}\n",
           n, size, rate, (unsigned long long)window, (unsigned long long)sent, (unsigned long long)send_fail,
           (unsigned long long)received, (unsigned long long)stale, (unsigned long long)peer_rx, (unsigned long long)peer_tx,
           (unsigned long long)peer_fail, (unsigned long long)bad, (double)(last_send - t0) / 1e9,
           (double)(t_end - t0) / 1e9, cpu_user, cpu_sys, nrtt, mean / 1000.0, PCT(0.50), PCT(0.90), PCT(0.99),
           PCT(0.999), nrtt ? (double)rtts[nrtt - 1] / 1000.0 : -1.0);
    return 0;
}
