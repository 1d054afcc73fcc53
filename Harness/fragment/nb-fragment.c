/*
 * nb-fragment: NestBench's memory fragmenter (runs on the measured machine or inside a guest).
 *
 *   nb-fragment --target F [--order N] [--method anon-holes|page-cache] [--slack BYTES]
 *               [--free BYTES] [--floor BYTES] [--mlock] [--hold] [--release-on-eof] [--timeout SEC] [--interval-ms MS]
 *               [--dir DIR]
 *
 * Closed loop on the free memory fragmentation index FMFI(order) of /proc/buddyinfo, pooled over
 * every zone except DMA (DMA32, Normal, Movable: the zones user pages come from):
 *   1. populate: take memory until MemAvailable is down to --slack (anonymous 4 KiB pages, or the page
 *      cache of unlinked files for page-cache), one thread per CPU — 4 KiB pages, never huge pages: a
 *      partially released THP is only queued for a deferred split and frees nothing.
 *   1b. top up with huge pages (MADV_HUGEPAGE, when THP is always/madvise): they take the big free
 *      blocks the slack left (often a whole pristine DMA32 zone) and never a hole; they are the
 *      whole blocks handed back first in step 3.
 *   2. group our pages by physical block of 2^order pages (PFNs from /proc/self/pagemap; visible
 *      with CAP_SYS_ADMIN). Without PFNs, fall back to virtual blocks with 8 evenly spaced keepers
 *      (less exact: the printed fmfi says what was reached).
 *   3. fragment, block by block: while FMFI < target + 0.02, release all but one page of the block
 *      (a hole that cannot coalesce to the target order); above it, release the whole block (a free
 *      block of the target order), handing memory back while holding FMFI. With --free, stop once
 *      that much memory is free and keep the rest populated: the workload then finds only --free
 *      bytes, fragmented to the target.
 *   4. hold (--hold): keep the kept pages (mlock'ed with --mlock, so compaction with
 *      vm.compact_unevictable_allowed=0 cannot migrate them) until SIGTERM/SIGINT, end of stdin, the
 *      parent's death or --timeout; give whole blocks back if MemAvailable falls below --floor.
 *
 * Line protocol on stdout (one event per line, key=value fields):
 *   start total=B available=B target=F order=N method=M
 *   progress phase=populate|fragment fmfi=F held=B free=B
 *   topup huge=B available=B | topup huge=0 skipped=thp-never|page-cache
 *   keepers mode=pagemap|stride pages=N
 *   ready fmfi=F held=B free=B seconds=S reached=0|1
 *   hold fmfi=F held=B free=B available=B
 *   yield released=B available=B
 *   released reason=signal|stdin|parent|timeout|done
 *   error MESSAGE
 * Exit status: 0 after release, 1 on a system failure, 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif

#define PAGE 4096UL
#define CHUNK (64UL << 20)

static volatile sig_atomic_t stop_signal = 0;
static void on_signal(int sig) { stop_signal = sig; }

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void emit(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static int parse_size(const char *text, uint64_t *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || end == text || v < 0) return -1;
    uint64_t mult = 1;
    if (*end) {
        switch (*end) {
        case 'k': case 'K': mult = 1UL << 10; break;
        case 'm': case 'M': mult = 1UL << 20; break;
        case 'g': case 'G': mult = 1UL << 30; break;
        default: return -1;
        }
        end++;
        if (*end == 'i' || *end == 'I') end++;
        if (*end == 'b' || *end == 'B') end++;
        if (*end) return -1;
    }
    *out = (uint64_t)(v * (double)mult);
    return 0;
}

/* MemAvailable and MemTotal in bytes. */
static int meminfo(uint64_t *available, uint64_t *total) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        unsigned long long kb;
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) *available = kb * 1024;
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) *total = kb * 1024;
    }
    fclose(f);
    return 0;
}

/* FMFI(order) pooled over every zone except DMA (the zones user pages come from: DMA32, Normal,
 * Movable); free bytes in *free_bytes. -1 on error. */
static double fmfi(int order, uint64_t *free_bytes) {
    FILE *f = fopen("/proc/buddyinfo", "r");
    if (!f) return -1;
    char line[512];
    double fr = 0, big = 0;
    while (fgets(line, sizeof line, f)) {
        char zone[32];
        int node, consumed = 0;
        if (sscanf(line, "Node %d, zone %31s%n", &node, zone, &consumed) != 2) continue;
        if (!strcmp(zone, "DMA")) continue;
        char *p = line + consumed;
        for (int i = 0;; i++) {
            char *end;
            unsigned long long k = strtoull(p, &end, 10);
            if (end == p) break;
            p = end;
            double pages = (double)k * (double)(1UL << i);
            fr += pages;
            if (i >= order) big += pages;
        }
    }
    fclose(f);
    if (free_bytes) *free_bytes = (uint64_t)(fr * PAGE);
    if (fr <= 0) return 1.0; /* as the kernel: no free memory is all unusable */
    return (fr - big) / fr;
}

/* Whether THP can serve MADV_HUGEPAGE regions (enabled is always or madvise). */
static int thp_usable(void) {
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f) return 0;
    char line[128] = {0};
    char *ok = fgets(line, sizeof line, f);
    fclose(f);
    return ok && (strstr(line, "[always]") || strstr(line, "[madvise]"));
}

struct chunk {
    char *base;       /* mapping */
    size_t length;
    size_t kept;      /* bytes still resident */
    int fd;           /* page-cache file, -1 for anonymous */
    uint8_t *keep;    /* one byte per page: 1 = keeper, never released while fragmenting */
    int huge;         /* populated with huge pages (the top-up): released whole, never punched */
};

static struct chunk *chunks = NULL;
static size_t nchunks = 0, capchunks = 0;
static uint64_t held = 0;

static int add_chunk(struct chunk c) {
    if (nchunks == capchunks) {
        capchunks = capchunks ? capchunks * 2 : 256;
        struct chunk *n = realloc(chunks, capchunks * sizeof *chunks);
        if (!n) return -1;
        chunks = n;
    }
    chunks[nchunks++] = c;
    return 0;
}

/* Releases [offset, offset+len) of chunk c. */
static void release_range(struct chunk *c, size_t offset, size_t len) {
    if (len == 0) return;
    if (c->fd >= 0) {
        posix_fadvise(c->fd, (off_t)offset, (off_t)len, POSIX_FADV_DONTNEED);
    } else {
        madvise(c->base + offset, len, MADV_DONTNEED);
    }
}

static void release_chunk(struct chunk *c) {
    if (c->fd >= 0) {
        posix_fadvise(c->fd, 0, 0, POSIX_FADV_DONTNEED);
        close(c->fd);
        c->fd = -1;
    } else if (c->base) {
        munmap(c->base, c->length);
    }
    free(c->keep);
    c->keep = NULL;
    held -= c->kept;
    c->kept = 0;
    c->base = NULL;
}

/* Populating in parallel: threads take chunk slots from a shared counter. */
struct populate_job {
    struct chunk *slots;
    size_t count;
    size_t next;
    int cache;
    const char *dir;
    uint64_t slack;
    pthread_mutex_t lock;
};

static int populate_anon(uint64_t bytes, struct chunk *out);
static int populate_cache(const char *dir, uint64_t bytes, struct chunk *out);

static void *populate_worker(void *arg) {
    struct populate_job *job = arg;
    for (;;) {
        pthread_mutex_lock(&job->lock);
        size_t i = job->next < job->count ? job->next++ : job->count;
        pthread_mutex_unlock(&job->lock);
        if (i >= job->count || stop_signal) break;
        uint64_t available = 0, total = 0;
        if (meminfo(&available, &total) != 0 || available <= job->slack + CHUNK) break;
        struct chunk c = {0};
        c.fd = -1;
        int rc = job->cache ? populate_cache(job->dir, CHUNK, &c) : populate_anon(CHUNK, &c);
        if (rc != 0) break;
        job->slots[i] = c;
    }
    return NULL;
}

/* Our resident pages grouped by physical block of 2^order pages (from /proc/self/pagemap: bit 63
 * present, bits 0-54 PFN): group_start[g]..group_start[g+1] index into group_pages (global page
 * numbers: chunk * pages_per_chunk + page). Returns the number of groups, 0 when PFNs are not
 * visible (no CAP_SYS_ADMIN) or for page-cache chunks. */
static uint32_t *group_pages = NULL;
static size_t *group_start = NULL;

static size_t index_pagemap(int order) {
    int fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0 || chunks == NULL) return 0;
    size_t ppc = CHUNK / PAGE, npages = nchunks * ppc;
    uint64_t *entries = malloc(ppc * sizeof *entries);
    uint32_t *block_of = malloc(npages * sizeof *block_of); /* UINT32_MAX: not resident */
    if (!entries || !block_of) { free(entries); free(block_of); close(fd); return 0; }
    uint32_t max_block = 0;
    int visible = 0;
    for (size_t ci = 0; ci < nchunks; ci++) {
        struct chunk *c = &chunks[ci];
        if (c->huge) {
            for (size_t i = 0; i < ppc; i++) block_of[ci * ppc + i] = UINT32_MAX;
            continue;
        }
        off_t off = (off_t)((uintptr_t)c->base / PAGE * sizeof(uint64_t));
        if (c->fd >= 0 || pread(fd, entries, ppc * sizeof *entries, off) != (ssize_t)(ppc * sizeof *entries)) {
            free(entries); free(block_of); close(fd); return 0;
        }
        for (size_t i = 0; i < ppc; i++) {
            uint64_t pfn = entries[i] & ((1ULL << 55) - 1);
            if (!((entries[i] >> 63) & 1) || pfn == 0) { block_of[ci * ppc + i] = UINT32_MAX; continue; }
            visible = 1;
            uint32_t b = (uint32_t)(pfn >> order);
            block_of[ci * ppc + i] = b;
            if (b > max_block) max_block = b;
        }
    }
    free(entries);
    close(fd);
    if (!visible) { free(block_of); return 0; }
    /* Counting sort by block. */
    size_t nblocks = (size_t)max_block + 1;
    size_t *count = calloc(nblocks + 1, sizeof *count);
    group_pages = malloc(npages * sizeof *group_pages);
    if (!count || !group_pages) { free(count); free(block_of); return 0; }
    for (size_t p = 0; p < npages; p++) if (block_of[p] != UINT32_MAX) count[block_of[p] + 1]++;
    for (size_t b = 0; b < nblocks; b++) count[b + 1] += count[b];
    size_t *cursor = malloc(nblocks * sizeof *cursor);
    if (!cursor) { free(count); free(block_of); return 0; }
    memcpy(cursor, count, nblocks * sizeof *cursor);
    for (size_t p = 0; p < npages; p++) if (block_of[p] != UINT32_MAX) group_pages[cursor[block_of[p]]++] = (uint32_t)p;
    free(cursor);
    free(block_of);
    /* Keep only non-empty groups. */
    group_start = malloc((nblocks + 1) * sizeof *group_start);
    size_t groups = 0;
    for (size_t b = 0; b < nblocks; b++) {
        if (count[b + 1] > count[b]) group_start[groups++] = count[b];
    }
    group_start[groups] = count[nblocks];
    free(count);
    return groups;
}

/* Releases the pages group_pages[from..to) (sorted by virtual address), merging runs; returns bytes. */
static size_t release_pages(size_t from, size_t to) {
    size_t ppc = CHUNK / PAGE, released = 0, i = from;
    while (i < to) {
        size_t j = i + 1;
        while (j < to && group_pages[j] == group_pages[j - 1] + 1 && group_pages[j] / ppc == group_pages[i] / ppc) j++;
        struct chunk *c = &chunks[group_pages[i] / ppc];
        release_range(c, (size_t)(group_pages[i] % ppc) * PAGE, (j - i) * PAGE);
        c->kept -= (j - i) * PAGE;
        released += (j - i) * PAGE;
        i = j;
    }
    return released;
}

/* Without PFNs: 8 evenly spaced keepers per virtual block of 2^order pages. */
static size_t choose_keepers_stride(int order) {
    size_t pages_per_chunk = CHUNK / PAGE, per_block = (size_t)1 << order;
    size_t step = per_block / 8 ? per_block / 8 : 1, keepers = 0;
    for (size_t ci = 0; ci < nchunks; ci++) {
        if (chunks[ci].huge) continue;
        chunks[ci].keep = calloc(pages_per_chunk, 1);
        if (!chunks[ci].keep) return keepers;
        for (size_t i = 0; i < pages_per_chunk; i += step) { chunks[ci].keep[i] = 1; keepers++; }
    }
    return keepers;
}

/* Releases every page of [off, off+len) of c except keepers; returns the bytes released. */
static size_t punch(struct chunk *c, size_t off, size_t len) {
    size_t released = 0, first = off / PAGE, last = (off + len) / PAGE, run = first;
    for (size_t i = first; i <= last; i++) {
        if (i == last || (c->keep && c->keep[i])) {
            if (i > run) {
                release_range(c, run * PAGE, (i - run) * PAGE);
                released += (i - run) * PAGE;
            }
            run = i + 1;
        }
    }
    return released;
}

static int populate_anon(uint64_t bytes, struct chunk *out) {
    char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return -1;
    madvise(p, bytes, MADV_NOHUGEPAGE);
    if (madvise(p, bytes, MADV_POPULATE_WRITE) != 0) {
        if (errno != EINVAL) { munmap(p, bytes); return -1; }
        for (size_t o = 0; o < bytes; o += PAGE) p[o] = 1; /* kernels before 5.14 */
    }
    out->base = p;
    out->length = bytes;
    out->kept = bytes;
    out->fd = -1;
    return 0;
}

static int populate_cache(const char *dir, uint64_t bytes, struct chunk *out) {
    char path[4096];
    snprintf(path, sizeof path, "%s/nb-fragment-XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    unlink(path); /* gone with the process, whatever happens */
    static char buf[1 << 20];
    memset(buf, 0x5a, sizeof buf);
    for (uint64_t o = 0; o < bytes; o += sizeof buf) {
        if (pwrite(fd, buf, sizeof buf, (off_t)o) != (ssize_t)sizeof buf) { close(fd); return -1; }
    }
    fdatasync(fd); /* clean pages can be dropped selectively */
    out->base = NULL;
    out->length = bytes;
    out->kept = bytes;
    out->fd = fd;
    return 0;
}

static void usage(void) {
    fprintf(stderr, "usage: nb-fragment --target F [--order N] [--method anon-holes|page-cache] [--slack BYTES] "
                    "[--floor BYTES] [--mlock] [--hold] [--timeout SEC] [--interval-ms MS] [--dir DIR]\n");
}

int main(int argc, char **argv) {
    double target = -1, timeout = 0;
    int order = 9, do_mlock = 0, hold = 0, release_on_eof = 0, interval_ms = 1000;
    uint64_t slack = 1UL << 30, floor_bytes = 512UL << 20, want_free = 0;
    const char *method = "anon-holes", *dir = "/var/tmp";
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "--mlock")) { do_mlock = 1; continue; }
        if (!strcmp(k, "--hold")) { hold = 1; continue; }
        if (!strcmp(k, "--release-on-eof")) { release_on_eof = 1; continue; }
        if (i + 1 >= argc) { usage(); return 2; }
        const char *v = argv[++i];
        char *end;
        if (!strcmp(k, "--target")) {
            target = strtod(v, &end);
            if (*end || target < 0 || target > 1) { fprintf(stderr, "nb-fragment: --target: \"%s\" is not in 0..1\n", v); return 2; }
        } else if (!strcmp(k, "--order")) {
            order = (int)strtol(v, &end, 10);
            if (*end || order < 1 || order > 10) { fprintf(stderr, "nb-fragment: --order: \"%s\" is not in 1..10\n", v); return 2; }
        } else if (!strcmp(k, "--method")) {
            if (strcmp(v, "anon-holes") && strcmp(v, "page-cache")) { fprintf(stderr, "nb-fragment: --method: \"%s\" is not anon-holes or page-cache\n", v); return 2; }
            method = v;
        } else if (!strcmp(k, "--slack")) {
            if (parse_size(v, &slack)) { fprintf(stderr, "nb-fragment: --slack: invalid size \"%s\"\n", v); return 2; }
        } else if (!strcmp(k, "--free")) {
            if (parse_size(v, &want_free)) { fprintf(stderr, "nb-fragment: --free: invalid size \"%s\"\n", v); return 2; }
        } else if (!strcmp(k, "--floor")) {
            if (parse_size(v, &floor_bytes)) { fprintf(stderr, "nb-fragment: --floor: invalid size \"%s\"\n", v); return 2; }
        } else if (!strcmp(k, "--timeout")) {
            timeout = strtod(v, &end);
            if (*end || timeout < 0) { fprintf(stderr, "nb-fragment: --timeout: invalid \"%s\"\n", v); return 2; }
        } else if (!strcmp(k, "--interval-ms")) {
            interval_ms = (int)strtol(v, &end, 10);
            if (*end || interval_ms < 10) { fprintf(stderr, "nb-fragment: --interval-ms: invalid \"%s\"\n", v); return 2; }
        } else if (!strcmp(k, "--dir")) {
            dir = v;
        } else {
            fprintf(stderr, "nb-fragment: unknown option %s\n", k);
            usage();
            return 2;
        }
    }
    if (target < 0) { fprintf(stderr, "nb-fragment: --target is required\n"); usage(); return 2; }

    pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    signal(SIGPIPE, SIG_IGN);

    int cache = !strcmp(method, "page-cache");
    double t0 = now_seconds();
    uint64_t available = 0, total = 0, free_bytes = 0;
    if (meminfo(&available, &total) != 0) { emit("error cannot read /proc/meminfo: %s", strerror(errno)); return 1; }
    double f = fmfi(order, &free_bytes);
    if (f < 0) { emit("error cannot read /proc/buddyinfo: %s", strerror(errno)); return 1; }
    emit("start total=%" PRIu64 " available=%" PRIu64 " target=%.4f order=%d method=%s fmfi=%.4f", total, available,
         target, order, method, f);

    const char *reason = "done";
    /* Already at the target with nothing to hold back: nothing to do. */
    int reached = f >= target && (want_free == 0 || free_bytes <= want_free);
    if (!reached) {
        /* 1. populate, one thread per CPU */
        if (meminfo(&available, &total) != 0) { emit("error cannot read /proc/meminfo"); return 1; }
        size_t slots = available > slack + CHUNK ? (size_t)((available - slack) / CHUNK) : 0;
        struct populate_job job = {.count = slots, .cache = cache, .dir = dir, .slack = slack};
        pthread_mutex_init(&job.lock, NULL);
        job.slots = calloc(slots ? slots : 1, sizeof *job.slots);
        if (!job.slots) { emit("error out of memory"); return 1; }
        int nthreads = get_nprocs();
        if (nthreads < 1) nthreads = 1;
        if (nthreads > 8) nthreads = 8;
        pthread_t threads[8];
        for (int t = 0; t < nthreads; t++) pthread_create(&threads[t], NULL, populate_worker, &job);
        while (!stop_signal) {
            pthread_mutex_lock(&job.lock);
            size_t done = job.next;
            pthread_mutex_unlock(&job.lock);
            f = fmfi(order, &free_bytes);
            emit("progress phase=populate fmfi=%.4f held=%" PRIu64 " free=%" PRIu64, f, (uint64_t)done * CHUNK, free_bytes);
            if (done >= slots) break;
            struct timespec ts = {.tv_sec = interval_ms / 1000, .tv_nsec = (interval_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            if (meminfo(&available, &total) == 0 && available <= slack + CHUNK) break;
        }
        for (int t = 0; t < nthreads; t++) pthread_join(threads[t], NULL);
        for (size_t i = 0; i < slots; i++) {
            if (job.slots[i].length == 0) continue;
            if (add_chunk(job.slots[i]) != 0) { release_chunk(&job.slots[i]); continue; }
            held += CHUNK;
        }
        free(job.slots);
        if (nchunks == 0 && !stop_signal) {
            emit("error cannot populate memory (MemAvailable %" PRIu64 " is at or below the slack %" PRIu64 ")", available, slack);
            return 1;
        }
        /* 1b. top-up: the slack left free is in big blocks (often a pristine DMA32), which would cap
         * FMFI and feed the workload huge pages. Huge-page allocations take exactly such blocks and
         * never a hole; they become the whole blocks handed back below. Needs THP always/madvise. */
        size_t first_huge = nchunks;
        if (!cache && thp_usable()) {
            uint64_t reserve = slack / 4 > (256UL << 20) ? slack / 4 : (256UL << 20);
            while (!stop_signal && meminfo(&available, &total) == 0 && available > reserve + CHUNK) {
                char *raw = mmap(NULL, CHUNK + (2UL << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (raw == MAP_FAILED) break;
                char *p = (char *)(((uintptr_t)raw + (2UL << 20) - 1) & ~((uintptr_t)(2UL << 20) - 1));
                madvise(p, CHUNK, MADV_HUGEPAGE);
                if (madvise(p, CHUNK, MADV_POPULATE_WRITE) != 0) { munmap(raw, CHUNK + (2UL << 20)); break; }
                struct chunk c = {.base = raw, .length = CHUNK + (2UL << 20), .kept = CHUNK, .fd = -1, .huge = 1};
                if (add_chunk(c) != 0) { munmap(raw, c.length); break; }
                held += CHUNK;
            }
            emit("topup huge=%" PRIu64 " available=%" PRIu64, (uint64_t)(nchunks - first_huge) * CHUNK, available);
        } else {
            emit("topup huge=0 skipped=%s", cache ? "page-cache" : "thp-never");
        }
        /* 2. keepers: one page per physical block when PFNs are visible */
        size_t groups = index_pagemap(order);
        size_t keepers = groups;
        const char *mode = "pagemap";
        if (groups == 0) { keepers = choose_keepers_stride(order); mode = "stride"; }
        emit("keepers mode=%s pages=%zu", mode, keepers);
        /* 3. fragment, closed loop on FMFI; hysteresis: the index lags the releases between two
         * readings, so aim a little above the target */
        size_t block = PAGE << order;
        size_t since = 0, step = 0;
        /* Re-measure FMFI every `every` blocks: 64 on a big machine, down to every block on a small
         * guest, where 64 blocks are a large share of its memory and the loop would overshoot. */
        size_t nblocks = groups > 0 ? groups : (size_t)(held / block);
        size_t every = nblocks / 256;
        if (every < 1) every = 1;
        if (every > 64) every = 64;
        int enough = 0;
        f = fmfi(order, &free_bytes);
        if (groups > 0) {
            /* Per physical block: keep one page (a hole that cannot coalesce) or release it all. */
            size_t next_huge = first_huge;
            for (size_t g = 0; g < groups && !stop_signal;) {
                if (want_free > 0 && free_bytes >= want_free) { enough = 1; break; }
                size_t released;
                if (f < target + 0.02) {
                    released = release_pages(group_start[g] + 1, group_start[g + 1]);
                    g++;
                } else if (next_huge < nchunks) {
                    release_chunk(&chunks[next_huge++]); /* whole huge pages: free blocks of the target order */
                    released = 0;                         /* release_chunk counted them */
                    since += every / 2; /* a whole chunk of huge pages: half a measuring interval */
                } else {
                    released = release_pages(group_start[g], group_start[g + 1]);
                    g++;
                }
                held -= released;
                if (++since >= every || (want_free > 0 && free_bytes + (uint64_t)since * block >= want_free)) {
                    since = 0; /* re-measure every `every` blocks, and often when close to --free */
                    f = fmfi(order, &free_bytes);
                }
                if (++step % 2048 == 0) emit("progress phase=fragment fmfi=%.4f held=%" PRIu64 " free=%" PRIu64, f, held, free_bytes);
            }
            /* Every block handled: give back the remaining huge pages while the index stays above. */
            while (!enough && !stop_signal && next_huge < nchunks) {
                f = fmfi(order, &free_bytes);
                if (f < target + 0.02 || (want_free > 0 && free_bytes >= want_free)) break;
                release_chunk(&chunks[next_huge++]);
            }
        } else {
            /* Without PFNs: per virtual block, keep the stride keepers or release it all. */
            for (size_t ci = 0; ci < nchunks && !stop_signal && !enough; ci++) {
                struct chunk *c = &chunks[ci];
                for (size_t off = 0; off + block <= c->length; off += block) {
                    if (want_free > 0 && free_bytes >= want_free) { enough = 1; break; }
                    size_t released;
                    if (f < target + 0.02) {
                        released = punch(c, off, block);
                    } else {
                        release_range(c, off, block); /* each block is visited once: all of it was resident */
                        released = block;
                    }
                    c->kept -= released;
                    held -= released;
                    if (++since >= every || (want_free > 0 && free_bytes + (uint64_t)since * block >= want_free)) {
                        since = 0;
                        f = fmfi(order, &free_bytes);
                    }
                }
                if (ci % 16 == 15) emit("progress phase=fragment fmfi=%.4f held=%" PRIu64 " free=%" PRIu64, f, held, free_bytes);
            }
        }
        if (do_mlock) {
            for (size_t ci = 0; ci < nchunks; ci++)
                if (chunks[ci].fd < 0 && chunks[ci].kept > 0) mlock2(chunks[ci].base, chunks[ci].length, MLOCK_ONFAULT);
        }
        f = fmfi(order, &free_bytes);
        if (f < 0) { emit("error cannot read /proc/buddyinfo: %s", strerror(errno)); return 1; }
        reached = f >= target;
    }
    emit("ready fmfi=%.4f held=%" PRIu64 " free=%" PRIu64 " seconds=%.2f reached=%d", f, held, free_bytes,
         now_seconds() - t0, reached);

    /* 3. hold */
    if (hold) {
        double start = now_seconds(), last = 0;
        size_t yielded = 0; /* chunks given back, from the last: fully held ones first */
        while (!stop_signal) {
            struct pollfd p = {.fd = release_on_eof ? 0 : -1, .events = POLLIN};
            int r = poll(&p, 1, 50);
            if (r > 0 && release_on_eof) {
                char buf[64];
                ssize_t n = read(0, buf, sizeof buf);
                if (n == 0) { reason = "stdin"; break; }
            }
            if (getppid() != parent) { reason = "parent"; break; }
            if (timeout > 0 && now_seconds() - start >= timeout) { reason = "timeout"; break; }
            if (meminfo(&available, &total) == 0 && available < floor_bytes && yielded < nchunks) {
                uint64_t before = held;
                while (yielded < nchunks && available < floor_bytes + CHUNK) {
                    struct chunk *c = &chunks[nchunks - 1 - yielded++];
                    available += c->kept;
                    release_chunk(c);
                }
                meminfo(&available, &total);
                emit("yield released=%" PRIu64 " available=%" PRIu64, before - held, available);
            }
            if (now_seconds() - last >= interval_ms / 1000.0) {
                last = now_seconds();
                f = fmfi(order, &free_bytes);
                /* An unreadable buddyinfo is left out of the line, never reported as FMFI -1. */
                if (f < 0) emit("hold held=%" PRIu64 " available=%" PRIu64, held, available);
                else emit("hold fmfi=%.4f held=%" PRIu64 " free=%" PRIu64 " available=%" PRIu64, f, held, free_bytes, available);
            }
        }
    }
    if (stop_signal) reason = "signal";
    for (size_t ci = 0; ci < nchunks; ci++) release_chunk(&chunks[ci]);
    emit("released reason=%s", reason);
    return 0;
}
