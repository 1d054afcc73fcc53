/*
 * A process whose buffer only khugepaged can promote, for the alignment timeline's test:
 *   thp_promote MIB BEFORE_SECONDS AFTER_SECONDS
 * maps MIB MiB (2 MiB aligned), advises it MADV_NOHUGEPAGE and touches every page (base pages by
 * construction), waits BEFORE_SECONDS, advises it MADV_HUGEPAGE (now khugepaged may collapse it),
 * waits AFTER_SECONDS, stops itself when NB_PHASE_STOP=1 (the alignment probe's end-of-phase
 * hook), then prints the kernel's own count of its PMD-mapped THP bytes:
 *   result anon_huge_bytes N        (AnonHugePages of /proc/self/smaps_rollup)
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static void pause_for(double seconds) {
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {}
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: thp_promote MIB BEFORE_SECONDS AFTER_SECONDS\n");
        return 2;
    }
    size_t size = (size_t)strtoull(argv[1], NULL, 10) << 20, align = (size_t)2 << 20;
    char *raw = mmap(NULL, size + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) { perror("thp_promote: mmap"); return 1; }
    char *buf = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
    if (madvise(buf, size, MADV_NOHUGEPAGE) != 0) { perror("thp_promote: madvise(NOHUGEPAGE)"); return 1; }
    for (size_t i = 0; i < size; i += 4096) buf[i] = 1;
    pause_for(atof(argv[2]));
    if (madvise(buf, size, MADV_HUGEPAGE) != 0) { perror("thp_promote: madvise(HUGEPAGE)"); return 1; }
    pause_for(atof(argv[3]));
    const char *stop = getenv("NB_PHASE_STOP");
    if (stop && strcmp(stop, "1") == 0) raise(SIGSTOP);
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    unsigned long long kib = 0;
    int found = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "AnonHugePages: %llu kB", &kib) == 1) { found = 1; break; }
    if (f) fclose(f);
    if (found) printf("result anon_huge_bytes %llu\n", kib * 1024);
    return buf[0] == 1 ? 0 : 1;
}
