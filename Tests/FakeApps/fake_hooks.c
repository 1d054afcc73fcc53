/* A stand-in for PARSEC's hooks library (pkgs/libs/hooks), for NestBench's adapter tests (not
 * PARSEC code). Built, like a gcc-hooks build, as the shared library libhooks.so.0 that the
 * program is linked against: without LD_LIBRARY_PATH naming its directory the loader refuses to
 * start the program (exit 127), as with a real gcc-hooks build. Prints the hooks' lines; the ROI
 * total is FAKE_ROI (default "0.250000"), so tests know it. */
#include <stdio.h>
#include <stdlib.h>

void __parsec_bench_begin(int bench) {
    (void)bench;
    printf("[HOOKS] PARSEC Hooks Version 1.2\n");
}

void __parsec_roi_begin(void) { printf("[HOOKS] Entering ROI\n"); }

void __parsec_roi_end(void) { printf("[HOOKS] Leaving ROI\n"); }

void __parsec_bench_end(void) {
    const char *roi = getenv("FAKE_ROI");
    printf("[HOOKS] Total time spent in ROI: %ss\n", roi ? roi : "0.250000");
    printf("[HOOKS] Terminating\n");
}
