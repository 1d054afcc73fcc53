/* A stand-in for a PARSEC gcc-hooks program, for NestBench's adapter tests (not PARSEC code):
 * linked against the shared fake hooks library (fake_hooks.c), like a real gcc-hooks build.
 * Writes its arguments to args.txt and "$PARSECDIR $PARSECPLAT" to env.txt in its working
 * directory; when FAKE_INPUT_ARG=N, argument N must name a file there (canneal's netlist, which
 * parsecmgmt unpacks from the input archive) or it fails like canneal does. FAKE_SLEEP_S=N keeps
 * it N seconds in its ROI (a benchmark that runs past its timeout). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void __parsec_bench_begin(int bench);
void __parsec_roi_begin(void);
void __parsec_roi_end(void);
void __parsec_bench_end(void);

int main(int argc, char **argv) {
    printf("PARSEC Benchmark Suite Version 3.0-beta-20150206\n");
    __parsec_bench_begin(0);
    const char *input = getenv("FAKE_INPUT_ARG");
    if (input) {
        int n = atoi(input);
        if (n >= argc || access(argv[n], R_OK) != 0) {
            fprintf(stderr, "missing input %s\n", n < argc ? argv[n] : "(none)");
            return 1;
        }
    }
    FILE *f = fopen("args.txt", "w");
    for (int i = 1; i < argc; i++) fprintf(f, i > 1 ? " %s" : "%s", argv[i]);
    fprintf(f, "\n");
    fclose(f);
    f = fopen("env.txt", "w");
    const char *dir = getenv("PARSECDIR"), *plat = getenv("PARSECPLAT");
    fprintf(f, "%s %s\n", dir ? dir : "", plat ? plat : "");
    fclose(f);
    __parsec_roi_begin();
    const char *pause = getenv("FAKE_SLEEP_S");
    if (pause) sleep((unsigned)atoi(pause));
    __parsec_roi_end();
    __parsec_bench_end();
    return 0;
}
