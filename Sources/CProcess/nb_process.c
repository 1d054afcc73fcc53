#define _GNU_SOURCE
#include "nb_process.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void child_fail(int fd, int step) {
    int msg[2] = {step, errno};
    ssize_t ignored = write(fd, msg, sizeof msg);
    (void)ignored;
    _exit(127);
}

static int open_output(const char *path) {
    if (path == NULL) return open("/dev/null", O_WRONLY | O_CLOEXEC);
    return open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
}

int nb_spawn(const nb_spawn_spec *spec, pid_t *pid_out, int *gate_out, int *status_out) {
    int gate[2] = {-1, -1};
    int status[2];
    if (pipe2(status, O_CLOEXEC) != 0) return -1;
    if (spec->gated && pipe2(gate, O_CLOEXEC) != 0) {
        int e = errno;
        close(status[0]);
        close(status[1]);
        errno = e;
        return -1;
    }
    /* Open the output files in the parent so that errors (bad directory) surface early. */
    int out = open_output(spec->stdout_path);
    int err = out >= 0 ? open_output(spec->stderr_path) : -1;
    int in = err >= 0 ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1;
    if (in < 0) {
        int e = errno;
        if (out >= 0) close(out);
        if (err >= 0) close(err);
        close(status[0]); close(status[1]);
        if (spec->gated) { close(gate[0]); close(gate[1]); }
        errno = e;
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(out); close(err); close(in);
        close(status[0]); close(status[1]);
        if (spec->gated) { close(gate[0]); close(gate[1]); }
        errno = e;
        return -1;
    }
    if (pid == 0) {
        /* Child: async-signal-safe calls only. */
        close(status[0]);
        if (spec->gated) close(gate[1]);
        if (spec->pdeathsig > 0) prctl(PR_SET_PDEATHSIG, spec->pdeathsig);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        if (setpgid(0, 0) != 0) child_fail(status[1], 1);
        if (spec->ncpus > 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            for (int i = 0; i < spec->ncpus; i++) {
                if (spec->cpus[i] < 0 || spec->cpus[i] >= CPU_SETSIZE) { errno = EINVAL; child_fail(status[1], 2); }
                CPU_SET(spec->cpus[i], &set);
            }
            if (sched_setaffinity(0, sizeof set, &set) != 0) child_fail(status[1], 2);
        }
        if (spec->cwd != NULL && chdir(spec->cwd) != 0) child_fail(status[1], 3);
        if (dup2(in, 0) < 0) child_fail(status[1], 4);
        if (dup2(out, 1) < 0) child_fail(status[1], 4);
        if (dup2(err, 2) < 0) child_fail(status[1], 5);
        if (spec->gated) {
            char byte;
            ssize_t n;
            do { n = read(gate[0], &byte, 1); } while (n < 0 && errno == EINTR);
            if (n != 1) { errno = ECANCELED; child_fail(status[1], 7); }
        }
        /* ETXTBSY: a program written just now (the compiled harness, a script) can still be open
         * for writing in another thread's child between its fork and its exec (that child holds
         * the fd until it execs): wait a little and try again, as Go's os/exec does. */
        for (int tries = 0;; tries++) {
            execve(spec->path, spec->argv, spec->envp);
            if (errno != ETXTBSY || tries >= 100) break;
            struct timespec pause = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
            nanosleep(&pause, NULL);
        }
        child_fail(status[1], 6);
    }
    /* Parent. Set the group here too: whichever runs first wins the race, both are fine. */
    setpgid(pid, pid);
    close(out); close(err); close(in);
    close(status[1]);
    if (spec->gated) close(gate[0]);
    *pid_out = pid;
    *gate_out = spec->gated ? gate[1] : -1;
    *status_out = status[0];
    return 0;
}

int nb_release(int gate_fd) {
    char byte = 1;
    ssize_t n;
    do { n = write(gate_fd, &byte, 1); } while (n < 0 && errno == EINTR);
    int e = errno;
    close(gate_fd);
    errno = e;
    return n == 1 ? 0 : -1;
}

int nb_spawn_status(int status_fd, int *step, int *err) {
    int msg[2];
    ssize_t n;
    do { n = read(status_fd, msg, sizeof msg); } while (n < 0 && errno == EINTR);
    close(status_fd);
    if (n == (ssize_t)sizeof msg) {
        *step = msg[0];
        *err = msg[1];
        return -1;
    }
    *step = 0;
    *err = 0;
    return 0;
}

pid_t nb_wait4(pid_t pid, int *status, struct rusage *usage) {
    pid_t r;
    do { r = wait4(pid, status, 0, usage); } while (r < 0 && errno == EINTR);
    return r;
}

int nb_exited(int status) { return WIFEXITED(status); }
int nb_exit_status(int status) { return WEXITSTATUS(status); }
int nb_signaled(int status) { return WIFSIGNALED(status); }
int nb_term_signal(int status) { return WTERMSIG(status); }

int nb_set_affinity(pid_t tid, const int *cpus, int ncpus) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int i = 0; i < ncpus; i++) {
        if (cpus[i] < 0 || cpus[i] >= CPU_SETSIZE) {
            errno = EINVAL;
            return -1;
        }
        CPU_SET(cpus[i], &set);
    }
    return sched_setaffinity(tid, sizeof set, &set);
}

int nb_get_affinity(pid_t tid, int *out, int max) {
    cpu_set_t set;
    if (sched_getaffinity(tid, sizeof set, &set) != 0) return -1;
    int n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < max; c++) {
        if (CPU_ISSET(c, &set)) out[n++] = c;
    }
    return n;
}

long nb_send_with_fd(int sock, const void *buf, unsigned long len, int fd) {
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    union {
        char bytes[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.bytes, .msg_controllen = sizeof control.bytes};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    ssize_t n;
    do n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return (long)n;
}
