/* A stand-in for a Tailbench app, for NestBench's adapter tests (not Tailbench code).
 * Role from argv[0]: *integrated* (one process), *server_networked* (listens, answers, never
 * exits), *client_networked* (connects, sends requests, writes lats.bin). Like the real harness it
 * reads its TBENCH_* variables and prints "NAME = value"; unlike it, an unset one is an error
 * (exit 2) so the tests see that every variable is set. FAKE_MODE=hang forks a child and both
 * sleep forever (the child's pid goes to hang-child.pid); FAKE_MODE=crash raises SIGSEGV.
 * lats.bin: TBENCH_MAXREQS records of (queue, service, sojourn) little-endian uint64 ns,
 * record i = (i*1000, 50000 + i, 50000 + i*1001); service and sojourn times are multiplied by the
 * number in the file FAKE_LATENCY_SCALE_FILE names, when set (a synthetic night's step). */
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

static int write_lats(long n) {
    double scale = 1;
    const char *scale_file = getenv("FAKE_LATENCY_SCALE_FILE");
    if (scale_file) {
        FILE *s = fopen(scale_file, "r");
        if (!s || fscanf(s, "%lf", &scale) != 1) return 6;
        fclose(s);
    }
    FILE *f = fopen("lats.bin", "wb");
    if (!f) return 1;
    for (long i = 0; i < n; i++) {
        uint64_t r[3] = {(uint64_t)i * 1000, (uint64_t)((50000 + (double)i) * scale),
            (uint64_t)((50000 + (double)i * 1001) * scale)};
        fwrite(r, sizeof r, 1, f);
    }
    return fclose(f) != 0;
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
        char buf[64];
        while (read(c, buf, sizeof buf) > 0) (void)!write(c, buf, 1);
        for (;;) pause(); /* like the real server: it never exits after its client */
    }
    if (!strcmp(role, "client")) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr)) return 4;
        char b = 'r';
        for (long i = 0; i < n; i++) {
            if (write(fd, &b, 1) != 1 || read(fd, &b, 1) != 1) return 5;
        }
    }
    return write_lats(n);
}
