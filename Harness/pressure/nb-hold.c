/*
 * nb-hold: memory pressure for NestBench conditions (runs in the place it pressures: this
 * machine or a guest layer, started by NestBench as a helper).
 *
 *   nb-hold --available BYTES [--step BYTES] [--interval-ms MS] [--timeout-s S]
 *
 * Allocates anonymous memory in steps until the kernel's MemAvailable (/proc/meminfo) is at most
 * BYTES, and holds it until SIGTERM/SIGINT, then exits 0 (its memory goes back with it). The
 * held pages are base pages (MADV_NOHUGEPAGE: the pressure takes no huge page a workload could
 * have had) filled with content unique to each page (KSM finds nothing to merge in them), and
 * are not locked: under pressure the kernel may swap them like any other anonymous memory.
 *
 * Protocol on stdout, one line each, `kind key=value ...`:
 *   start available=B target=B
 *   held bytes=B available=B             while allocating, every step
 *   ready held=B available=B seconds=S   the target is reached; holding
 *   hold held=B available=B              every interval while holding (available left
 *                                        out when /proc/meminfo cannot be read)
 *   error MESSAGE                        then exit 1 (nothing is held)
 * Exit status 0 after a signal, 1 on failure, 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* MemAvailable in bytes, or -1. */
static long long mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "MemAvailable:", 13) == 0) {
            kb = strtoll(line + 13, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

static int parse_bytes(const char *text, uint64_t *out) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0') return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    uint64_t target = 0, step = 16ULL << 20, interval_ms = 1000, timeout_s = 600;
    int have_target = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) {
            fprintf(stderr, "nb-hold: %s needs a value\n", argv[i]);
            return 2;
        }
        uint64_t *slot = NULL;
        if (strcmp(argv[i], "--available") == 0) slot = &target, have_target = 1;
        else if (strcmp(argv[i], "--step") == 0) slot = &step;
        else if (strcmp(argv[i], "--interval-ms") == 0) slot = &interval_ms;
        else if (strcmp(argv[i], "--timeout-s") == 0) slot = &timeout_s;
        else {
            fprintf(stderr, "nb-hold: unknown option %s\n", argv[i]);
            return 2;
        }
        if (parse_bytes(argv[++i], slot) != 0) {
            fprintf(stderr, "nb-hold: %s: not a whole number: \"%s\"\n", argv[i - 1], argv[i]);
            return 2;
        }
    }
    if (!have_target || step < 4096) {
        fprintf(stderr, "usage: nb-hold --available BYTES [--step BYTES>=4096] [--interval-ms MS] [--timeout-s S]\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);

    long long available = mem_available();
    if (available < 0) {
        printf("error cannot read MemAvailable from /proc/meminfo\n");
        return 1;
    }
    printf("start available=%lld target=%" PRIu64 "\n", available, target);
    double t0 = now_seconds();
    uint64_t held = 0, seq = 0;
    long page = sysconf(_SC_PAGESIZE);
    uint64_t self = (uint64_t)getpid();
    while (!stop && available > (long long)target) {
        if (now_seconds() - t0 > (double)timeout_s) {
            printf("error MemAvailable still %lld bytes after %" PRIu64 " s (target %" PRIu64 ")\n", available, timeout_s,
                   target);
            return 1;
        }
        /* The last step takes only what is left above the target. */
        uint64_t want = (uint64_t)available - target < step ? (uint64_t)available - target : step;
        want = (want + (uint64_t)page - 1) / (uint64_t)page * (uint64_t)page;
        char *p = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            printf("error mmap of %" PRIu64 " bytes failed after holding %" PRIu64 ": %s\n", want, held, strerror(errno));
            return 1;
        }
        madvise(p, want, MADV_NOHUGEPAGE);
        for (uint64_t off = 0; off < want; off += (uint64_t)page) {
            uint64_t *w = (uint64_t *)(p + off);
            w[0] = ++seq * 0x9E3779B97F4A7C15ULL; /* unique per page: nothing for KSM to merge */
            w[1] = self;
        }
        held += want;
        available = mem_available();
        if (available < 0) {
            printf("error cannot read MemAvailable from /proc/meminfo after holding %" PRIu64 " bytes\n", held);
            return 1;
        }
        printf("held bytes=%" PRIu64 " available=%lld\n", held, available);
    }
    if (stop) return 0;
    printf("ready held=%" PRIu64 " available=%lld seconds=%.3f\n", held, available, now_seconds() - t0);
    while (!stop) {
        struct timespec ts = {(time_t)(interval_ms / 1000), (long)(interval_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        if (stop) break;
        long long now = mem_available();
        /* An unreadable MemAvailable is left out of the line, never reported as -1. */
        if (now < 0) printf("hold held=%" PRIu64 "\n", held);
        else printf("hold held=%" PRIu64 " available=%lld\n", held, now);
    }
    return 0;
}
