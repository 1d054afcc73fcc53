/*
 * nb-agent: NestBench's agent inside a guest (started by Harness/guest/init).
 *
 *   nb-agent SPOOL
 *
 * The layer below talks to it through files in SPOOL (the guest's writable 9p share, /nb):
 * it writes a request as SPOOL/req/N.req (written elsewhere, then renamed in) and waits for
 * SPOOL/resp/N.resp (also renamed in when complete). On start the agent writes SPOOL/ready.
 *
 * A request is lines "key value" (no newlines inside values; argv elements one per line):
 *   verb run|spawn|write|pin|kill
 *   arg A            (repeated: argv; argv[0] is looked up in PATH)
 *   env K=V          (repeated: the complete environment)
 *   cwd DIR, stdout FILE, stderr FILE, cpus 0,2-3, timeout SECONDS
 *   monitor MS, samples FILE (run: readings of buddyinfo, MemFree, the process's AnonHugePages and
 *                    the THP/compaction vmstat counters to FILE before the start, every MS while it
 *                    runs (0 or absent: none) and after its end; see write_reading)
 *   path P, value V  (write: writes V to P, answers with what P reads back)
 *   qmp SOCKET, vcpu CPU (repeated, vCPU i -> CPU; pin: QMP handshake, query-cpus-fast,
 *                    sched_setaffinity of each vCPU thread, read back, then "cont")
 *   pid N, signal S  (kill: signals the process group of a spawned process)
 * A response is lines:
 *   ok 1 | error MESSAGE
 *   pid N; exit N; signal N; timed_out 0|1; wall_seconds S; user_seconds S; system_seconds S;
 *   minor_faults N; major_faults N; max_rss_kib N; voluntary_context_switches N;
 *   involuntary_context_switches N
 *   value TEXT; vcpu I tid T cpus LIST
 * `run` waits for the process (killing its group after the timeout); `spawn` returns at once
 * and the agent reaps the process when it exits, writing SPOOL/exited/PID: first line "exit N" or
 * "signal N", then the usage lines of a `run` answer (pid, timed_out 0, wall_seconds from spawn
 * to reaping, user/system seconds, faults, max_rss_kib, context switches).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ITEMS 512

struct request {
    char verb[32];
    char *argv[MAX_ITEMS + 1];
    int argc;
    char *envp[MAX_ITEMS + 1];
    int envc;
    char cwd[4096], out[4096], err[4096], path[4096], value[4096], qmp[4096], cpus[1024];
    int vcpus[256];
    int nvcpus;
    double timeout;
    int pid, sig;
    int monitor;          /* run: memory monitor period in ms, 0 = off */
    char samples[4096];   /* run: where readings go */
};

static const char *spool;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_cpus(const char *text, cpu_set_t *set) {
    CPU_ZERO(set);
    int count = 0;
    const char *p = text;
    while (*p) {
        char *end;
        long lo = strtol(p, &end, 10);
        if (end == p || lo < 0) return -1;
        long hi = lo;
        p = end;
        if (*p == '-') {
            hi = strtol(p + 1, &end, 10);
            if (end == p + 1 || hi < lo) return -1;
            p = end;
        }
        for (long c = lo; c <= hi && c < CPU_SETSIZE; c++) {
            CPU_SET((int)c, set);
            count++;
        }
        if (*p == ',') p++;
        else if (*p) return -1;
    }
    return count;
}

static void format_cpus(const cpu_set_t *set, char *buf, size_t size) {
    size_t n = 0;
    buf[0] = '\0';
    for (int c = 0; c < CPU_SETSIZE && n + 8 < size; c++) {
        if (CPU_ISSET(c, set)) n += (size_t)snprintf(buf + n, size - n, "%s%d", n ? "," : "", c);
    }
}

static int read_request(const char *file, struct request *r) {
    FILE *f = fopen(file, "r");
    if (!f) return -1;
    memset(r, 0, sizeof *r);
    r->pid = -1;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0) {
        if (line[len - 1] == '\n') line[--len] = '\0';
        char *space = strchr(line, ' ');
        const char *val = space ? space + 1 : "";
        if (space) *space = '\0';
#define COPY(field) snprintf(r->field, sizeof r->field, "%s", val)
        if (!strcmp(line, "verb")) COPY(verb);
        else if (!strcmp(line, "arg") && r->argc < MAX_ITEMS) r->argv[r->argc++] = strdup(val);
        else if (!strcmp(line, "env") && r->envc < MAX_ITEMS) r->envp[r->envc++] = strdup(val);
        else if (!strcmp(line, "cwd")) COPY(cwd);
        else if (!strcmp(line, "stdout")) COPY(out);
        else if (!strcmp(line, "stderr")) COPY(err);
        else if (!strcmp(line, "path")) COPY(path);
        else if (!strcmp(line, "value")) COPY(value);
        else if (!strcmp(line, "qmp")) COPY(qmp);
        else if (!strcmp(line, "cpus")) COPY(cpus);
        else if (!strcmp(line, "timeout")) r->timeout = atof(val);
        else if (!strcmp(line, "pid")) r->pid = atoi(val);
        else if (!strcmp(line, "signal")) r->sig = atoi(val);
        else if (!strcmp(line, "vcpu") && r->nvcpus < 256) r->vcpus[r->nvcpus++] = atoi(val);
        else if (!strcmp(line, "monitor")) r->monitor = atoi(val);
        else if (!strcmp(line, "samples")) COPY(samples);
#undef COPY
    }
    free(line);
    fclose(f);
    return 0;
}

/* The response being built, written atomically by finish(). */
static char response[1 << 16];
static size_t response_len;

static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(response + response_len, sizeof response - response_len, fmt, ap);
    va_end(ap);
    if (n > 0 && response_len + (size_t)n < sizeof response) response_len += (size_t)n;
}

static void finish(const char *id) {
    char tmp[4096], final[4096];
    snprintf(tmp, sizeof tmp, "%s/resp/.%s.tmp", spool, id);
    snprintf(final, sizeof final, "%s/resp/%s.resp", spool, id);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    fwrite(response, 1, response_len, f);
    fclose(f);
    rename(tmp, final);
}

static long long anon_huge_kib(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long long kib = -1;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "AnonHugePages:", 14)) {
            kib = strtoll(line + 14, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kib;
}

/* One reading for the layer below (which computes the same metrics as on its own machine):
 *   t MILLIS, buddy LINE (each /proc/buddyinfo line), MemFree KIB, AnonHugePages KIB (of pid,
 *   when pid > 0 and readable), vmstat NAME VALUE (thp_*, compact_*, pgfault, pgmajfault). */
static void write_reading(FILE *out, double t, pid_t pid) {
    char line[1024];
    fprintf(out, "t %lld\n", (long long)(t * 1000));
    FILE *f = fopen("/proc/buddyinfo", "r");
    if (f) {
        while (fgets(line, sizeof line, f)) fprintf(out, "buddy %s", line);
        fclose(f);
    }
    f = fopen("/proc/meminfo", "r");
    if (f) {
        while (fgets(line, sizeof line, f)) {
            if (!strncmp(line, "MemFree:", 8)) {
                fprintf(out, "MemFree %lld\n", strtoll(line + 8, NULL, 10));
                break;
            }
        }
        fclose(f);
    }
    if (pid > 0) {
        long long h = anon_huge_kib(pid);
        if (h >= 0) fprintf(out, "AnonHugePages %lld\n", h);
    }
    f = fopen("/proc/vmstat", "r");
    if (f) {
        char name[128];
        long long v;
        while (fscanf(f, "%127s %lld", name, &v) == 2) {
            if (!strncmp(name, "thp_", 4) || !strncmp(name, "compact_", 8) || !strcmp(name, "pgfault") ||
                !strcmp(name, "pgmajfault"))
                fprintf(out, "vmstat %s %lld\n", name, v);
        }
        fclose(f);
    }
    fflush(out);
}

/* Spawned processes still running; when one ends, SPOOL/exited/PID says how ("exit N" or
 * "signal N", then its usage), so that the layer below learns at once that a guest's QEMU is
 * gone, and what a helper (a Tailbench client) used. */
#define MAX_SPAWNED 256
static pid_t spawned[MAX_SPAWNED];
static double spawned_at[MAX_SPAWNED];
static int n_spawned;

static void record_exit(pid_t pid, int status, const struct rusage *ru) {
    int i = 0;
    while (i < n_spawned && spawned[i] != pid) i++;
    if (i == n_spawned) return; /* a worker, not a spawned process */
    double wall = now() - spawned_at[i];
    spawned[i] = spawned[n_spawned - 1];
    spawned_at[i] = spawned_at[n_spawned - 1];
    n_spawned--;
    char dir[2048], tmp[4096], path[4096];
    snprintf(dir, sizeof dir, "%s/exited", spool);
    mkdir(dir, 0755);
    snprintf(tmp, sizeof tmp, "%s/.%d.tmp", dir, (int)pid);
    snprintf(path, sizeof path, "%s/%d", dir, (int)pid);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    if (WIFSIGNALED(status)) fprintf(f, "signal %d\n", WTERMSIG(status));
    else fprintf(f, "exit %d\n", WEXITSTATUS(status));
    fprintf(f, "pid %d\ntimed_out 0\nwall_seconds %.6f\n", (int)pid, wall);
    fprintf(f, "user_seconds %.6f\nsystem_seconds %.6f\n", (double)ru->ru_utime.tv_sec + ru->ru_utime.tv_usec / 1e6,
            (double)ru->ru_stime.tv_sec + ru->ru_stime.tv_usec / 1e6);
    fprintf(f, "minor_faults %ld\nmajor_faults %ld\nmax_rss_kib %ld\n", ru->ru_minflt, ru->ru_majflt, ru->ru_maxrss);
    fprintf(f, "voluntary_context_switches %ld\ninvoluntary_context_switches %ld\n", ru->ru_nvcsw, ru->ru_nivcsw);
    fclose(f);
    rename(tmp, path);
}

/* fork + setpgid + affinity + redirections + exec; returns the pid or -1 (message in response). */
static pid_t start(struct request *r) {
    if (r->argc == 0) {
        say("error no arg lines: nothing to run\n");
        return -1;
    }
    cpu_set_t set;
    if (r->cpus[0] && parse_cpus(r->cpus, &set) <= 0) {
        say("error bad cpus %s\n", r->cpus);
        return -1;
    }
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        say("error pipe: %s\n", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        say("error fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        const char *step = "setpgid";
        setpgid(0, 0);
        if (r->cpus[0] && sched_setaffinity(0, sizeof set, &set) != 0) step = "pinning";
        else if (r->cwd[0] && chdir(r->cwd) != 0) step = "chdir";
        else {
            int in = open("/dev/null", O_RDONLY);
            int o = open(r->out[0] ? r->out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
            int e = open(r->err[0] ? r->err : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (in < 0 || o < 0 || e < 0) step = "redirecting stdout/stderr";
            else {
                dup2(in, 0);
                dup2(o, 1);
                dup2(e, 2);
                r->envp[r->envc] = NULL;
                r->argv[r->argc] = NULL;
                char **saved = environ;
                environ = r->envp;
                step = "exec";
                execvp(r->argv[0], r->argv);
                environ = saved;
            }
        }
        char msg[512];
        int n = snprintf(msg, sizeof msg, "%s: %s", step, strerror(errno));
        if (write(pipefd[1], msg, (size_t)n) < 0) _exit(127);
        _exit(127);
    }
    close(pipefd[1]);
    char msg[512];
    ssize_t n = read(pipefd[0], msg, sizeof msg - 1);
    close(pipefd[0]);
    if (n > 0) {
        msg[n] = '\0';
        waitpid(pid, NULL, 0);
        say("error %s failed at %s\n", r->argv[0], msg);
        return -1;
    }
    return pid;
}

static void do_run(struct request *r) {
    /* Readings are kept in memory while the process runs (no share I/O next to the workload),
       then written to the samples file at once. */
    char *buffer = NULL;
    size_t buffer_len = 0;
    FILE *readings = r->samples[0] ? open_memstream(&buffer, &buffer_len) : NULL;
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    double t0 = now();
    if (readings) write_reading(readings, 0, 0);
    pid_t pid = start(r);
    if (pid < 0) {
        if (readings) fclose(readings);
        free(buffer);
        return;
    }
    int status = 0, timed_out = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    double term_at = 0;
    /* Wakes at once when the child exits; else at the next sample or after 200 ms (the timeout). */
    double next_sample = r->monitor > 0 ? r->monitor / 1000.0 : -1;
    for (;;) {
        pid_t w = wait4(pid, &status, WNOHANG, &ru);
        if (w == pid) break;
        double t = now() - t0;
        if (readings && next_sample > 0 && t >= next_sample) {
            write_reading(readings, t, pid);
            while (next_sample <= t) next_sample += r->monitor / 1000.0;
        }
        if (r->timeout > 0 && t > r->timeout && !timed_out) {
            timed_out = 1;
            kill(-pid, SIGTERM);
            term_at = t;
        } else if (timed_out && t > term_at + 2) {
            kill(-pid, SIGKILL);
        }
        double wait_s = 0.2;
        if (next_sample > 0 && next_sample - t < wait_s) wait_s = next_sample - t > 0 ? next_sample - t : 0.001;
        struct timespec tick = {(time_t)wait_s, (long)((wait_s - (time_t)wait_s) * 1e9)};
        sigtimedwait(&chld, NULL, &tick);
    }
    double wall = now() - t0;
    kill(-pid, SIGKILL); /* anything left in its group goes with it */
    if (readings) {
        write_reading(readings, now() - t0, 0);
        fclose(readings);
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", r->samples);
        FILE *out = fopen(tmp, "w");
        if (out) {
            fwrite(buffer, 1, buffer_len, out);
            fclose(out);
            rename(tmp, r->samples);
        }
        free(buffer);
    }
    say("ok 1\npid %d\n", (int)pid);
    if (WIFEXITED(status)) say("exit %d\n", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) say("signal %d\n", WTERMSIG(status));
    say("timed_out %d\nwall_seconds %.6f\n", timed_out, wall);
    say("user_seconds %.6f\nsystem_seconds %.6f\n", (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
        (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    say("minor_faults %ld\nmajor_faults %ld\nmax_rss_kib %ld\n", ru.ru_minflt, ru.ru_majflt, ru.ru_maxrss);
    say("voluntary_context_switches %ld\ninvoluntary_context_switches %ld\n", ru.ru_nvcsw, ru.ru_nivcsw);
}

static void do_write(struct request *r) {
    int fd = open(r->path, O_WRONLY);
    if (fd < 0) {
        say("error %s: %s\n", r->path, strerror(errno));
        return;
    }
    ssize_t n = write(fd, r->value, strlen(r->value));
    int e = errno;
    close(fd);
    if (n < 0) {
        say("error %s: writing \"%s\": %s\n", r->path, r->value, strerror(e));
        return;
    }
    char buf[4096];
    fd = open(r->path, O_RDONLY);
    n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0) close(fd);
    buf[n > 0 ? n : 0] = '\0';
    for (char *p = buf; *p; p++)
        if (*p == '\n') *p = ' ';
    say("ok 1\nvalue %s\n", buf);
}

/* Reads one QMP message line that is not an event. */
static int qmp_reply(FILE *f, char *buf, size_t size) {
    while (fgets(buf, (int)size, f)) {
        if (strstr(buf, "\"event\"")) continue;
        return 0;
    }
    return -1;
}

static void do_pin(struct request *r) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(r->qmp) >= sizeof addr.sun_path) {
        say("error %s: QMP socket path too long\n", r->qmp);
        return;
    }
    memcpy(addr.sun_path, r->qmp, strlen(r->qmp) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int connected = -1;
    for (int i = 0; i < 1800 && connected != 0; i++) { /* QEMU can take minutes to start under emulation */
        connected = connect(fd, (struct sockaddr *)&addr, sizeof addr);
        if (connected != 0) usleep(100000);
    }
    if (connected != 0) {
        say("error %s: cannot connect to QMP: %s\n", r->qmp, strerror(errno));
        close(fd);
        return;
    }
    FILE *f = fdopen(fd, "r+");
    static char buf[1 << 16];
    if (qmp_reply(f, buf, sizeof buf) != 0 || !strstr(buf, "\"QMP\"")) {
        say("error %s: no QMP greeting\n", r->qmp);
        fclose(f);
        return;
    }
    fputs("{\"execute\":\"qmp_capabilities\"}\n", f);
    fflush(f);
    if (qmp_reply(f, buf, sizeof buf) != 0 || !strstr(buf, "\"return\"")) {
        say("error %s: qmp_capabilities failed\n", r->qmp);
        fclose(f);
        return;
    }
    fputs("{\"execute\":\"query-cpus-fast\"}\n", f);
    fflush(f);
    if (qmp_reply(f, buf, sizeof buf) != 0 || !strstr(buf, "\"return\"")) {
        say("error %s: query-cpus-fast failed\n", r->qmp);
        fclose(f);
        return;
    }
    /* {"return": [{"thread-id": T, "props": {...}, "cpu-index": I, ...}, ...]}: the keys of each
       vCPU object at depth 2 (the "thread-id" inside "props" is at depth 3 and is not the thread). */
    int pinned = 0, depth = 0, tid = -1, index = -1;
    say("ok 1\n");
    for (char *p = buf; *p; p++) {
        if (*p == '{') {
            depth++;
            if (depth == 2) tid = index = -1;
        } else if (*p == '}') {
            if (depth == 2 && tid > 0 && index >= 0) {
                if (index < r->nvcpus) {
                    cpu_set_t set;
                    CPU_ZERO(&set);
                    CPU_SET(r->vcpus[index], &set);
                    if (sched_setaffinity(tid, sizeof set, &set) != 0) {
                        say("error vCPU %d (thread %d): sched_setaffinity: %s\n", index, tid, strerror(errno));
                        fclose(f);
                        return;
                    }
                    pinned++;
                }
                cpu_set_t back;
                char list[1024] = "?";
                if (sched_getaffinity(tid, sizeof back, &back) == 0) format_cpus(&back, list, sizeof list);
                say("vcpu %d tid %d cpus %s\n", index, tid, list);
            }
            depth--;
        } else if (depth == 2 && !strncmp(p, "\"thread-id\":", 12)) {
            tid = atoi(p + 12);
        } else if (depth == 2 && !strncmp(p, "\"cpu-index\":", 12)) {
            index = atoi(p + 12);
        }
    }
    if (pinned < r->nvcpus) say("error pinned %d vCPUs of the %d requested\n", pinned, r->nvcpus);
    fputs("{\"execute\":\"cont\"}\n", f);
    fflush(f);
    if (qmp_reply(f, buf, sizeof buf) != 0 || !strstr(buf, "\"return\"")) say("error %s: cont failed\n", r->qmp);
    fclose(f);
}

static void handle(const char *file, const char *id) {
    struct request *r = calloc(1, sizeof *r);
    response_len = 0;
    response[0] = '\0';
    if (read_request(file, r) != 0) {
        say("error cannot read %s\n", file);
    } else if (!strcmp(r->verb, "run")) {
        do_run(r);
    } else if (!strcmp(r->verb, "write")) {
        do_write(r);
    } else if (!strcmp(r->verb, "pin")) {
        do_pin(r);
    } else if (!strcmp(r->verb, "kill")) {
        if (r->pid > 0 && kill(-r->pid, r->sig ? r->sig : SIGKILL) == 0) say("ok 1\n");
        else say("error kill %d: %s\n", r->pid, strerror(errno));
    } else {
        say("error unknown verb \"%s\"\n", r->verb);
    }
    unlink(file);
    finish(id);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: nb-agent SPOOL\n");
        return 2;
    }
    spool = argv[1];
    char dir[2048];
    snprintf(dir, sizeof dir, "%s/req", spool);
    mkdir(dir, 0755);
    snprintf(dir, sizeof dir, "%s/resp", spool);
    mkdir(dir, 0755);
    struct utsname u;
    uname(&u);
    char ready[4096], tmp[4096];
    snprintf(ready, sizeof ready, "%s/ready", spool);
    snprintf(tmp, sizeof tmp, "%s/.ready.tmp", spool);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "nb-agent: cannot write %s: %s\n", tmp, strerror(errno));
        return 1;
    }
    fprintf(f, "kernel %s\ncpus %ld\npid %d\n", u.release, sysconf(_SC_NPROCESSORS_ONLN), (int)getpid());
    fclose(f);
    rename(tmp, ready);
    fprintf(stderr, "nb-agent: ready on %s\n", spool);
    snprintf(dir, sizeof dir, "%s/req", spool);
    for (;;) {
        /* Reap spawned processes and finished workers; a spawned process's end is recorded. */
        int status;
        pid_t gone;
        struct rusage ru;
        while ((gone = wait4(-1, &status, WNOHANG, &ru)) > 0) record_exit(gone, status, &ru);
        DIR *d = opendir(dir);
        if (!d) {
            sleep(1);
            continue;
        }
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            size_t len = strlen(e->d_name);
            if (len < 5 || e->d_name[0] == '.' || strcmp(e->d_name + len - 4, ".req") != 0) continue;
            char name[128];
            if (len >= sizeof name) continue;
            snprintf(name, sizeof name, "%s", e->d_name);
            char claimed[4096], file[4096];
            snprintf(file, sizeof file, "%s/%s", dir, name);
            snprintf(claimed, sizeof claimed, "%s/.%s.work", dir, name);
            if (rename(file, claimed) != 0) continue;
            struct request peek;
            read_request(claimed, &peek);
            if (!strcmp(peek.verb, "spawn")) {
                /* Started by the agent itself so that it reaps it. */
                response_len = 0;
                double at = now();
                pid_t pid = start(&peek);
                if (pid > 0) {
                    say("ok 1\npid %d\n", (int)pid);
                    if (n_spawned < MAX_SPAWNED) {
                        spawned_at[n_spawned] = at;
                        spawned[n_spawned++] = pid;
                    }
                }
                unlink(claimed);
                char id[256];
                snprintf(id, sizeof id, "%.*s", (int)(len - 4), name);
                finish(id);
                continue;
            }
            /* Everything else in a worker, so that a long run does not block the others. */
            if (fork() == 0) {
                char id[256];
                snprintf(id, sizeof id, "%.*s", (int)(len - 4), name);
                handle(claimed, id);
                _exit(0);
            }
        }
        closedir(d);
        usleep(100000);
    }
}
