/*
 * nb-agent: NestBench's agent inside a guest (started by Harness/guest/init).
 *
 *   nb-agent SPOOL [--local-output]
 *
 * The layer below talks to it through files in SPOOL (the guest's writable 9p share, /nb):
 * it writes a request as SPOOL/req/N.req (written elsewhere, then renamed in) and waits for
 * SPOOL/resp/N.resp (also renamed in when complete). On start the agent writes SPOOL/ready.
 *
 * A request is lines "key value" (no newlines inside values; argv elements one per line):
 *   verb run|spawn|write|pin|kill|probe|qmp
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
 *   stopfile FILE    (run: when the process stops itself (SIGSTOP, e.g. nb-micro with
 *                    NB_PHASE_STOP=1) the agent writes "stopped PID" to FILE and keeps waiting;
 *                    the layer below probes it, then sends SIGCONT with `kill`)
 *   startfile FILE   (run: "started PID" is written to FILE once the process runs, for a
 *                    layer below that probes it while it runs: the alignment timeline)
 *   verb probe: pid N, path OUT, range START LEN (repeated, bytes, 0x… allowed), pgtable 1, kvm 1:
 *                    the page-table files the alignment probe needs, written to OUT (see do_probe)
 *   verb qmp: qmp SOCKET, arg JSON (repeated: one QMP command each): handshake, then each command;
 *                    answers "reply.I LINE" (the first non-event line QEMU sent back to command I)
 *   verb detach: path NAME (a virtio-serial port name, the doorbell): answers "ok 1" and
 *                    "clock C" (CLOCK_MONOTONIC seconds), unmounts SPOOL (QEMU refuses to migrate
 *                    while a 9p export is mounted; unmounting clunks its root fid, which lifts
 *                    the blocker), waits until a byte
 *                    arrives on the port, mounts SPOOL again (9p tag nbshare) and writes
 *                    SPOOL/resumed: "clock C" (when the doorbell rang) and "detached C". Meanwhile
 *                    no request is taken and a worker that finishes waits to write its files.
 * With --local-output (a standalone guest that can be saved) a `run`'s stdout and stderr go to
 * files in /run while it runs and are copied to the requested paths after it ends, so that
 * nothing holds the share open.
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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/file.h>
#include <sys/mount.h>
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
    char stopfile[4096];  /* run: written when the process stops itself */
    char startfile[4096]; /* run: written once the process runs */
    unsigned long long ranges[MAX_ITEMS][2]; /* probe: virtual ranges (start, length) */
    int nranges;
    int pgtable, kvm;     /* probe: also list page-table frames / KVM's per-VM page counts */
};

static const char *spool;
static int local_output; /* --local-output: a run's stdout/stderr in /run until it ends */
/* The detach flag and the share lock live in /run (NB_AGENT_RUN_DIR for tests of the agent
 * run on a machine whose /run other agents use). */
static char detached_flag[512] = "/run/nb-detached";
static char share_lock_path[512] = "/run/nb-share.lock";

/* A writer to the share holds the share lock (shared) from its check that the share is attached
 * until its write is done; detach takes it exclusively to raise the flag. So no write can start
 * before a detach and land after the unmount (lost, and the host waiting on it for ever). Each
 * call opens its own descriptor: flock locks belong to the open file, which forked workers share. */
static int share_lock(int wait) {
    for (;;) {
        int fd = open(share_lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0) flock(fd, LOCK_SH);
        if (access(detached_flag, F_OK) != 0) return fd >= 0 ? fd : INT32_MAX;
        if (fd >= 0) close(fd);
        if (!wait) return -1;
        usleep(100000);
    }
}

static void share_unlock(int fd) {
    if (fd >= 0 && fd != INT32_MAX) close(fd);
}

/* Copies FROM to TO (then removes FROM); 0 on success. */
static int copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "r");
    if (!in) return -1;
    FILE *out = fopen(to, "w");
    if (!out) {
        fclose(in);
        return -1;
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
    int failed = ferror(out);
    fclose(in);
    if (fclose(out) != 0) failed = 1;
    unlink(from);
    return failed ? -1 : 0;
}

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
        else if (!strcmp(line, "stopfile")) COPY(stopfile);
        else if (!strcmp(line, "startfile")) COPY(startfile);
        else if (!strcmp(line, "pgtable")) r->pgtable = atoi(val);
        else if (!strcmp(line, "kvm")) r->kvm = atoi(val);
        else if (!strcmp(line, "range") && r->nranges < MAX_ITEMS) {
            char *end;
            r->ranges[r->nranges][0] = strtoull(val, &end, 0);
            r->ranges[r->nranges][1] = strtoull(end, NULL, 0);
            r->nranges++;
        }
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

/* Writes "WORD PID" to FILE on the share (through a temporary file: readers see all or nothing);
 * the caller holds the share lock. */
static void note_pid(const char *file, const char *word, pid_t pid) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", file);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    fprintf(f, "%s %d\n", word, (int)pid);
    fclose(f);
    rename(tmp, file);
}

static void finish(const char *id) {
    int lock = share_lock(1);
    char tmp[4096], final[4096];
    snprintf(tmp, sizeof tmp, "%s/resp/.%s.tmp", spool, id);
    snprintf(final, sizeof final, "%s/resp/%s.resp", spool, id);
    FILE *f = fopen(tmp, "w");
    if (f) {
        fwrite(response, 1, response_len, f);
        fclose(f);
        rename(tmp, final);
    }
    share_unlock(lock);
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
    char wanted_out[4096] = "", wanted_err[4096] = "";
    if (local_output) {
        /* The process writes to /run; its files go to the share after it ends. */
        snprintf(wanted_out, sizeof wanted_out, "%s", r->out);
        snprintf(wanted_err, sizeof wanted_err, "%s", r->err);
        if (r->out[0]) snprintf(r->out, sizeof r->out, "/run/nb-out.%d", (int)getpid());
        if (r->err[0]) snprintf(r->err, sizeof r->err, "/run/nb-err.%d", (int)getpid());
        if (r->err[0] && !strcmp(wanted_out, wanted_err)) snprintf(r->err, sizeof r->err, "%s", r->out);
        /* A working directory on the share would keep it busy: the process runs in /run. */
        size_t sl = strlen(spool);
        if (!strncmp(r->cwd, spool, sl) && (r->cwd[sl] == '/' || r->cwd[sl] == '\0')) snprintf(r->cwd, sizeof r->cwd, "/run");
    }
    pid_t pid = start(r);
    if (pid > 0 && r->startfile[0]) {
        int lock = share_lock(1);
        note_pid(r->startfile, "started", pid);
        share_unlock(lock);
    }
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
    int stop_noted = 0;
    double stopped_at = -1, paused = 0; /* the time it stands stopped does not count towards the timeout */
    for (;;) {
        pid_t w = wait4(pid, &status, WNOHANG | WUNTRACED | WCONTINUED, &ru);
        if (w == pid && WIFCONTINUED(status)) {
            if (stopped_at >= 0) paused += now() - t0 - stopped_at;
            stopped_at = -1;
            continue;
        }
        if (w == pid && WIFSTOPPED(status)) {
            if (stopped_at < 0) stopped_at = now() - t0;
            continue;
        }
        if (w == pid) break;
        /* Stopped itself at the end of its measured phase: tell the layer below once, through
           the share, when it is attached (while detached the note waits: the process stays
           stopped until the layer below has seen it and continued it). */
        if (stopped_at >= 0 && r->stopfile[0] && !stop_noted) {
            int lock = share_lock(0);
            if (lock != -1) {
                note_pid(r->stopfile, "stopped", pid);
                share_unlock(lock);
                stop_noted = 1;
            }
        }
        double t = now() - t0;
        if (readings && next_sample > 0 && t >= next_sample) {
            write_reading(readings, t, pid);
            while (next_sample <= t) next_sample += r->monitor / 1000.0;
        }
        double counted = t - paused - (stopped_at >= 0 ? t - stopped_at : 0);
        if (r->timeout > 0 && counted > r->timeout && !timed_out) {
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
    int lock = share_lock(1);
    if (local_output) {
        if (wanted_out[0] && copy_file(r->out, wanted_out) != 0) say("error copying %s to %s\n", r->out, wanted_out);
        if (wanted_err[0] && strcmp(r->err, r->out) && copy_file(r->err, wanted_err) != 0)
            say("error copying %s to %s\n", r->err, wanted_err);
    }
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
    share_unlock(lock);
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

/* ---- probe: the page-table files of one process, for the alignment probe of the layer below ----
 * OUT is "NBPROBE 1\n", then sections "NAME OFFSET LENGTH\n" each followed by LENGTH raw bytes,
 * then "end 0 0\n". Sections: maps (the text of /proc/PID/maps), pagemap (bytes of
 * /proc/PID/pagemap from OFFSET), kpageflags (bytes of /proc/kpageflags from OFFSET), pgtable
 * (u64 frame numbers whose kpageflags has PGTABLE, bit 26), kvm (text lines "VM FILE VALUE" of
 * /sys/kernel/debug/kvm/VM/pages_{4k,2m,1g}), error (text "WHAT: WHY"). Pagemap covers every
 * whole 2 MiB region of the ranges asked for (none asked: of every private anonymous or
 * anonymous-hugetlb mapping), read in 8 MiB preads; kpageflags only the 512 frames of each region
 * whose first page is present at a 512-aligned frame (the only ones that can be one huge page). */
static void section(FILE *out, const char *name, unsigned long long offset, const void *data, size_t length) {
    fprintf(out, "%s %llu %zu\n", name, offset, length);
    if (length) fwrite(data, 1, length, out);
}

static void section_error(FILE *out, const char *fmt, ...) {
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    section(out, "error", 0, text, n > 0 ? (size_t)(n < (int)sizeof text ? n : (int)sizeof text - 1) : 0);
}

static int cmp_u64(const void *a, const void *b) {
    unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;
    return x < y ? -1 : x > y;
}

#define HUGE_SZ (2ULL << 20)
#define CHUNK_ENTRIES (1 << 20) /* 8 MiB of pagemap: 4 GiB of virtual memory */

static void probe_range(FILE *out, int pagemap, unsigned long long start, unsigned long long end, uint64_t *buf,
                        unsigned long long **frames, size_t *nframes, size_t *capframes) {
    start = (start + HUGE_SZ - 1) / HUGE_SZ * HUGE_SZ;
    end = end / HUGE_SZ * HUGE_SZ;
    for (unsigned long long va = start; va < end;) {
        unsigned long long entries = (end - va) / 4096;
        if (entries > CHUNK_ENTRIES) entries = CHUNK_ENTRIES;
        unsigned long long offset = va / 4096 * 8;
        size_t want = (size_t)entries * 8, got = 0;
        while (got < want) {
            ssize_t n = pread(pagemap, (char *)buf + got, want - got, (off_t)(offset + got));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            got += (size_t)n;
        }
        section(out, "pagemap", offset, buf, got);
        for (size_t i = 0; i + 512 <= got / 8; i += 512) {
            uint64_t e = buf[i];
            uint64_t pfn = e & ((1ULL << 55) - 1);
            if ((e >> 63) && pfn && pfn % 512 == 0) {
                if (*nframes == *capframes) {
                    *capframes = *capframes ? *capframes * 2 : 1024;
                    *frames = realloc(*frames, *capframes * sizeof **frames);
                }
                (*frames)[(*nframes)++] = pfn;
            }
        }
        va += entries * 4096;
    }
}

static void do_probe(struct request *r) {
    if (r->pid <= 0 || !r->path[0]) {
        say("error probe needs pid and path\n");
        return;
    }
    char tmp[4200], file[64];
    snprintf(tmp, sizeof tmp, "%s.tmp", r->path);
    FILE *out = fopen(tmp, "w");
    if (!out) {
        say("error %s: %s\n", tmp, strerror(errno));
        return;
    }
    double t0 = now();
    fputs("NBPROBE 1\n", out);
    uint64_t *buf = malloc((size_t)CHUNK_ENTRIES * 8);
    unsigned long long *frames = NULL;
    size_t nframes = 0, capframes = 0;
    /* maps */
    snprintf(file, sizeof file, "/proc/%d/maps", r->pid);
    char *maps = NULL;
    size_t maps_len = 0;
    FILE *m = fopen(file, "r");
    if (m) {
        FILE *mem = open_memstream(&maps, &maps_len);
        char line[8192];
        while (fgets(line, sizeof line, m)) fputs(line, mem);
        fclose(mem);
        fclose(m);
        section(out, "maps", 0, maps, maps_len);
    } else {
        section_error(out, "%s: %s", file, strerror(errno));
    }
    snprintf(file, sizeof file, "/proc/%d/pagemap", r->pid);
    int pagemap = open(file, O_RDONLY | O_CLOEXEC);
    if (pagemap < 0) {
        section_error(out, "%s: %s", file, strerror(errno));
    } else if (r->nranges > 0) {
        for (int i = 0; i < r->nranges; i++)
            probe_range(out, pagemap, r->ranges[i][0], r->ranges[i][0] + r->ranges[i][1], buf, &frames, &nframes, &capframes);
    } else if (maps) {
        /* Private anonymous and anonymous-hugetlb mappings (a superset of what the probe tests). */
        char *save = NULL;
        for (char *line = strtok_r(maps, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            unsigned long long start, end, inode;
            char perms[8], path[4096] = "";
            if (sscanf(line, "%llx-%llx %7s %*s %*s %llu %4095[^\n]", &start, &end, perms, &inode, path) < 4) continue;
            if (perms[3] != 'p') continue;
            char *p = path;
            while (*p == ' ') p++;
            if (inode != 0 && strncmp(p, "/anon_hugepage", 14) != 0) continue;
            probe_range(out, pagemap, start, end, buf, &frames, &nframes, &capframes);
        }
    }
    if (pagemap >= 0) close(pagemap);
    int kpf = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
    if (kpf < 0 && (nframes > 0 || r->pgtable)) section_error(out, "/proc/kpageflags: %s", strerror(errno));
    if (kpf >= 0 && nframes > 0) {
        qsort(frames, nframes, sizeof *frames, cmp_u64);
        size_t i = 0;
        while (i < nframes) {
            size_t j = i + 1;
            while (j < nframes && (frames[j] == frames[j - 1] || frames[j] == frames[j - 1] + 512) &&
                   (frames[j] - frames[i] + 512) <= CHUNK_ENTRIES)
                j++;
            size_t count = (size_t)(frames[j - 1] - frames[i] + 512);
            ssize_t n = pread(kpf, buf, count * 8, (off_t)(frames[i] * 8));
            if (n < 0) section_error(out, "/proc/kpageflags at frame %llu: %s", frames[i], strerror(errno));
            else section(out, "kpageflags", frames[i] * 8, buf, (size_t)n);
            i = j;
        }
    }
    if (kpf >= 0 && r->pgtable) {
        unsigned long long *pg = NULL;
        size_t npg = 0, cappg = 0;
        for (unsigned long long off = 0;; off += (unsigned long long)CHUNK_ENTRIES * 8) {
            ssize_t n = pread(kpf, buf, (size_t)CHUNK_ENTRIES * 8, (off_t)off);
            if (n <= 0) break;
            for (size_t k = 0; k < (size_t)n / 8; k++) {
                if (buf[k] & (1ULL << 26)) {
                    if (npg == cappg) {
                        cappg = cappg ? cappg * 2 : 1024;
                        pg = realloc(pg, cappg * sizeof *pg);
                    }
                    pg[npg++] = off / 8 + k;
                }
            }
        }
        section(out, "pgtable", 0, pg, npg * 8);
        free(pg);
    }
    if (kpf >= 0) close(kpf);
    if (r->kvm) {
        DIR *d = opendir("/sys/kernel/debug/kvm");
        if (!d) {
            section_error(out, "kvm: /sys/kernel/debug/kvm: %s", strerror(errno));
        } else {
            char *text = NULL;
            size_t text_len = 0;
            FILE *t = open_memstream(&text, &text_len);
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (e->d_name[0] == '.' || !strchr(e->d_name, '-')) continue;
                static const char *names[] = {"pages_4k", "pages_2m", "pages_1g"};
                for (int k = 0; k < 3; k++) {
                    char path[512], value[64];
                    snprintf(path, sizeof path, "/sys/kernel/debug/kvm/%s/%s", e->d_name, names[k]);
                    FILE *f = fopen(path, "r");
                    if (!f) continue;
                    if (fgets(value, sizeof value, f)) fprintf(t, "%s %s %lld\n", e->d_name, names[k], strtoll(value, NULL, 10));
                    fclose(f);
                }
            }
            closedir(d);
            fclose(t);
            section(out, "kvm", 0, text, text_len);
            free(text);
        }
    }
    fputs("end 0 0\n", out);
    int failed = ferror(out);
    fclose(out);
    free(buf);
    free(frames);
    free(maps);
    if (failed) {
        say("error writing %s failed\n", tmp);
        unlink(tmp);
        return;
    }
    rename(tmp, r->path);
    say("ok 1\nseconds %.6f\n", now() - t0);
}

/* Reads one QMP message line that is not an event. */
static int qmp_reply(FILE *f, char *buf, size_t size) {
    while (fgets(buf, (int)size, f)) {
        if (strstr(buf, "\"event\"")) continue;
        return 0;
    }
    return -1;
}

/* Connects to a QMP socket and does the handshake; NULL with a message in the response. */
static FILE *qmp_open(const char *socket_path, int wait_seconds) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(socket_path) >= sizeof addr.sun_path) {
        say("error %s: QMP socket path too long\n", socket_path);
        return NULL;
    }
    memcpy(addr.sun_path, socket_path, strlen(socket_path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int connected = -1;
    for (int i = 0; i < wait_seconds * 10 && connected != 0; i++) {
        connected = connect(fd, (struct sockaddr *)&addr, sizeof addr);
        if (connected != 0) usleep(100000);
    }
    if (connected != 0) {
        say("error %s: cannot connect to QMP: %s\n", socket_path, strerror(errno));
        close(fd);
        return NULL;
    }
    FILE *f = fdopen(fd, "r+");
    static char buf[1 << 16];
    if (qmp_reply(f, buf, sizeof buf) != 0 || !strstr(buf, "\"QMP\"")) {
        say("error %s: no QMP greeting\n", socket_path);
        fclose(f);
        return NULL;
    }
    fputs("{\"execute\":\"qmp_capabilities\"}\n", f);
    fflush(f);
    if (qmp_reply(f, buf, sizeof buf) != 0 || !strstr(buf, "\"return\"")) {
        say("error %s: qmp_capabilities failed\n", socket_path);
        fclose(f);
        return NULL;
    }
    return f;
}

/* QMP pass-through: each arg is one command line; each answer comes back as reply.I. */
static void do_qmp(struct request *r) {
    FILE *f = qmp_open(r->qmp, 30);
    if (!f) return;
    say("ok 1\n");
    static char buf[1 << 16];
    for (int i = 0; i < r->argc; i++) {
        fputs(r->argv[i], f);
        fputc('\n', f);
        fflush(f);
        if (qmp_reply(f, buf, sizeof buf) != 0) {
            say("error %s: no reply to command %d\n", r->qmp, i);
            break;
        }
        buf[strcspn(buf, "\r\n")] = '\0';
        say("reply.%d %s\n", i, buf);
    }
    fclose(f);
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

/* The /dev node of the virtio-serial port named NAME (/sys/class/virtio-ports/vportNpM/name). */
static int find_port(const char *name, char *dev, size_t size) {
    DIR *d = opendir("/sys/class/virtio-ports");
    if (!d) return -1;
    struct dirent *e;
    int found = -1;
    while (found != 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[512], value[256] = "";
        snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        if (fgets(value, sizeof value, f)) value[strcspn(value, "\n")] = '\0';
        fclose(f);
        if (!strcmp(value, name)) {
            snprintf(dev, size, "/dev/%s", e->d_name);
            found = 0;
        }
    }
    closedir(d);
    return found;
}

/* detach (in the agent itself, between two scans of the spool): see the header. */
static void do_detach(struct request *r, const char *id) {
    response_len = 0;
    char dev[300];
    if (!r->path[0] || find_port(r->path, dev, sizeof dev) != 0) {
        say("error no virtio-serial port named \"%s\" (the layer needs detachable: true)\n", r->path);
        finish(id);
        return;
    }
    int port = open(dev, O_RDWR | O_CLOEXEC);
    if (port < 0) {
        say("error %s: %s\n", dev, strerror(errno));
        finish(id);
        return;
    }
    double detached = now();
    say("ok 1\nclock %.6f\n", detached);
    finish(id);
    /* Raised under the share lock: a worker writing to the share finishes first, and none
       starts until the share is back. */
    int lock = open(share_lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock >= 0) flock(lock, LOCK_EX);
    FILE *flag = fopen(detached_flag, "w");
    if (flag) fclose(flag);
    if (lock >= 0) close(lock);
    int unmounted = -1;
    for (int i = 0; i < 300 && unmounted != 0; i++) { /* a worker may still be closing a file */
        unmounted = umount(spool);
        if (unmounted != 0) usleep(100000);
    }
    if (unmounted != 0) fprintf(stderr, "nb-agent: cannot unmount %s: %s\n", spool, strerror(errno));
    else fprintf(stderr, "nb-agent: detached: %s unmounted, waiting on %s\n", spool, dev);
    /* A virtio-serial port reads end-of-file while nobody is connected on the host side (the
       QEMU saving the guest, or the restored one before NestBench connects): keep reading. */
    char byte;
    ssize_t n;
    do {
        n = read(port, &byte, 1);
        if (n == 0 || (n < 0 && errno == EAGAIN)) usleep(10000);
    } while (n == 0 || (n < 0 && (errno == EINTR || errno == EAGAIN)));
    double rang = now();
    close(port);
    if (unmounted == 0 &&
        mount("nbshare", spool, "9p", 0, "trans=virtio,version=9p2000.L,msize=262144") != 0)
        fprintf(stderr, "nb-agent: cannot mount %s again: %s\n", spool, strerror(errno));
    unlink(detached_flag);
    fprintf(stderr, "nb-agent: resumed on %s\n", spool);
    char tmp[4096], path[4096];
    snprintf(tmp, sizeof tmp, "%s/.resumed.tmp", spool);
    snprintf(path, sizeof path, "%s/resumed", spool);
    FILE *f = fopen(tmp, "w");
    if (f) {
        fprintf(f, "clock %.6f\ndetached %.6f\n%s", rang, detached, n == 1 ? "" : "error the doorbell closed without a byte\n");
        fclose(f);
        rename(tmp, path);
    }
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
    } else if (!strcmp(r->verb, "probe")) {
        do_probe(r);
    } else if (!strcmp(r->verb, "qmp")) {
        do_qmp(r);
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
    if (argc != 2 && !(argc == 3 && !strcmp(argv[2], "--local-output"))) {
        fprintf(stderr, "usage: nb-agent SPOOL [--local-output]\n");
        return 2;
    }
    spool = argv[1];
    local_output = argc == 3;
    const char *run_dir = getenv("NB_AGENT_RUN_DIR");
    if (run_dir && run_dir[0]) {
        snprintf(detached_flag, sizeof detached_flag, "%s/nb-detached", run_dir);
        snprintf(share_lock_path, sizeof share_lock_path, "%s/nb-share.lock", run_dir);
    }
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
            if (!strcmp(peek.verb, "detach")) {
                /* The spool's directory must not be open while it is unmounted. */
                unlink(claimed);
                closedir(d);
                d = NULL;
                char id[256];
                snprintf(id, sizeof id, "%.*s", (int)(len - 4), name);
                do_detach(&peek, id);
                break;
            }
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
                closedir(d); /* the worker must not hold the spool open (a detach unmounts it) */
                char id[256];
                snprintf(id, sizeof id, "%.*s", (int)(len - 4), name);
                handle(claimed, id);
                _exit(0);
            }
        }
        if (d) closedir(d);
        usleep(100000);
    }
}
