/* A stand-in for a Tailbench app, for NestBench's adapter tests (not Tailbench code).
 * Role from argv[0]: *integrated* (one process), *server_networked*, *client_networked*.
 * Like the real harness (harness/helpers.h getOpt) it prints "NAME = value" for each TBENCH_*
 * variable it reads; unlike it, an unset one is an error (exit 2) so the tests see that every
 * variable is set.
 *
 * Like the real harness it serves TBENCH_WARMUPREQS unrecorded requests, then TBENCH_MAXREQS
 * measured ones, offered at TBENCH_QPS (exponential inter-arrival times, seeded by
 * TBENCH_RANDSEED); each request is served by FAKE_SERVICE_US microseconds (default 50) of CPU
 * work (a spin on the thread's CPU clock, so the known service time holds on a loaded machine),
 * recorded as the service time; lats.bin gets one record per measured request of (queue,
 * service, sojourn) little-endian uint64 nanoseconds.
 *
 * Networked: the server listens, answers each request with its service time, and — like the real
 * server ("All clients exited. Server finishing") — exits 0 when its client has left. The client
 * sends the requests, writes lats.bin and exits 0. A server that is gone kills the client with
 * SIGPIPE, as the real one.
 *
 * FAKE_MODE=hang: fork a child and both sleep forever (the child's pid goes to hang-child.pid);
 * FAKE_MODE=crash: raise SIGSEGV; FAKE_MODE=server-dies: the server prints an error to stderr
 * and exits 3 after FAKE_DIE_AFTER (default 5) requests; FAKE_MODE=server-aborts-at-end: the
 * server aborts (SIGABRT) when its client has left, as silo's server may on a send to it.
 *
 * FAKE_LATENCY_SCALE_FILE (a synthetic night of the nightly recipe's test): the measured records
 * are the deterministic (i*1000, 50000 + i, 50000 + i*1001) ns, service and sojourn multiplied by
 * the number that file holds, so a night's step is exact. */
#include <arpa/inet.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *need(const char *name) {
    const char *v = getenv(name);
    if (!v) {
        fprintf(stderr, "%s is not set\n", name);
        exit(2);
    }
    printf("%s = %s\n", name, v);
    return v;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t) {
    for (uint64_t n = now_ns(); n < t; n = now_ns()) {
        struct timespec ts = {(time_t)((t - n) / 1000000000ull), (long)((t - n) % 1000000000ull)};
        nanosleep(&ts, NULL);
    }
}

static uint64_t cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Serves one request: spins until it has used the service time of CPU; returns the CPU time used. */
static uint64_t serve(uint64_t service_ns) {
    uint64_t start = cpu_ns();
    while (cpu_ns() - start < service_ns) {
    }
    return cpu_ns() - start;
}

static int read_full(int fd, void *buf, size_t len) {
    char *p = buf;
    while (len > 0) {
        ssize_t r = read(fd, p, len);
        if (r <= 0) return -1;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

int main(int argc, char **argv) {
    (void)argc;
    const char *mode = getenv("FAKE_MODE");
    const char *role = strstr(argv[0], "server") ? "server" : strstr(argv[0], "client") ? "client" : "integrated";
    const char *names[] = {"TBENCH_MAXREQS", "TBENCH_WARMUPREQS", "TBENCH_QPS", "TBENCH_MINSLEEPNS", "TBENCH_RANDSEED",
        "TBENCH_CLIENT_THREADS", "TBENCH_SERVER", "TBENCH_SERVER_PORT", "TBENCH_NCLIENTS"};
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++) need(names[i]);
    printf("role = %s\nargs =", role);
    for (int i = 1; argv[i]; i++) printf(" %s", argv[i]);
    printf("\n");
    fflush(stdout);
    if (mode && !strcmp(mode, "crash")) raise(SIGSEGV);
    if (mode && !strcmp(mode, "hang")) {
        pid_t child = fork();
        if (child == 0) {
            for (;;) pause();
        }
        FILE *f = fopen("hang-child.pid", "w");
        fprintf(f, "%d\n", (int)child);
        fclose(f);
        for (;;) pause();
    }
    long n = atol(getenv("TBENCH_MAXREQS"));
    long warmup = atol(getenv("TBENCH_WARMUPREQS"));
    double qps = atof(getenv("TBENCH_QPS"));
    uint64_t service_ns = (uint64_t)(getenv("FAKE_SERVICE_US") ? atof(getenv("FAKE_SERVICE_US")) : 50) * 1000;
    srand48(atol(getenv("TBENCH_RANDSEED")));
    int port = atoi(getenv("TBENCH_SERVER_PORT"));
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, getenv("TBENCH_SERVER"), &addr.sin_addr);

    if (!strcmp(role, "server")) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&addr, sizeof addr) || listen(fd, 4)) return 3;
        int c = accept(fd, NULL, NULL);
        long die_after = getenv("FAKE_DIE_AFTER") ? atol(getenv("FAKE_DIE_AFTER")) : 5;
        char req;
        for (long served = 0; read(c, &req, 1) == 1; served++) {
            if (mode && !strcmp(mode, "server-dies") && served == die_after) {
                fprintf(stderr, "fake server: out of memory after %ld requests\n", served);
                return 3;
            }
            uint64_t svc = serve(service_ns);
            if (write(c, &svc, sizeof svc) != sizeof svc) break;
        }
        if (mode && !strcmp(mode, "server-aborts-at-end")) {
            fprintf(stderr, "send() failed: Connection reset by peer\n");
            abort();
        }
        fprintf(stderr, "All clients exited. Server finishing\n");
        return 0;
    }

    double scale = 0;
    const char *scale_file = getenv("FAKE_LATENCY_SCALE_FILE");
    if (scale_file) {
        FILE *sf = fopen(scale_file, "r");
        if (!sf || fscanf(sf, "%lf", &scale) != 1 || !(scale > 0)) return 6;
        fclose(sf);
    }
    FILE *out = NULL;
    int fd = -1;
    if (!strcmp(role, "client")) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr)) return 4;
    }
    /* Open-loop arrivals at the offered rate; a request waits (queue) while the server is busy. */
    uint64_t next = now_ns(), free_at = 0;
    for (long i = 0; i < warmup + n; i++) {
        next += (uint64_t)(-log(1 - drand48()) / qps * 1e9);
        sleep_until(next);
        uint64_t arrival = now_ns();
        if (free_at > arrival) sleep_until(free_at);
        uint64_t begin = now_ns(), svc;
        if (fd >= 0) {
            char b = 'r';
            if (write(fd, &b, 1) != 1 || read_full(fd, &svc, sizeof svc)) {
                fprintf(stderr, "[CLIENT] recv() failed : server gone\n");
                /* The real client's sender keeps sending: the closed socket raises SIGPIPE. */
                for (;;) (void)!write(fd, &b, 1);
            }
        } else {
            svc = serve(service_ns);
        }
        uint64_t end = now_ns();
        free_at = end;
        if (i == warmup) out = fopen("lats.bin", "wb");
        if (out) {
            uint64_t r[3] = {begin - arrival, svc, end - arrival};
            if (scale > 0) {
                double k = (double)(i - warmup);
                r[0] = (uint64_t)k * 1000;
                r[1] = (uint64_t)((50000 + k) * scale);
                r[2] = (uint64_t)((50000 + k * 1001) * scale);
            }
            fwrite(r, sizeof r, 1, out);
        }
    }
    if (!out) out = fopen("lats.bin", "wb");
    return fclose(out) != 0;
}
