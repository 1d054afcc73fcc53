#ifndef NB_PROCESS_H
#define NB_PROCESS_H

#include <sys/types.h>
#include <sys/resource.h>

/// What a spawned child does between fork and exec. Every step runs in the child, where only
/// async-signal-safe calls are allowed: that is why this lives in C and not in Swift.
typedef struct {
    const char *path;               /* absolute path of the program */
    char *const *argv;              /* NULL-terminated */
    char *const *envp;              /* NULL-terminated */
    const char *cwd;                /* may be NULL */
    const int *cpus;                /* CPUs to pin to (sched_setaffinity); NULL/0 = inherit */
    int ncpus;
    const char *stdout_path;        /* file to write stdout to (created/truncated); NULL = /dev/null */
    const char *stderr_path;        /* likewise for stderr */
    int gated;                      /* 1: block before exec until nb_release() */
    int pdeathsig;                  /* signal on parent-thread death; 0 = none */
} nb_spawn_spec;

/// Forks a child in its own process group that applies `spec` and execs. Returns 0 and fills
/// pid, the gate's write end (-1 when not gated) and the status pipe's read end; -1 with errno.
int nb_spawn(const nb_spawn_spec *spec, pid_t *pid, int *gate_fd, int *status_fd);

/// Lets a gated child proceed to exec (write one byte, close). Closing without writing aborts it.
int nb_release(int gate_fd);

/// After release: 0 when exec succeeded; otherwise the failed step (1 setpgid, 2 affinity,
/// 3 chdir, 4 stdout, 5 stderr, 6 exec, 7 gate) and its errno. Blocks until exec or failure.
int nb_spawn_status(int status_fd, int *step, int *err);

/// wait4 that retries EINTR. Returns the pid or -1 with errno.
pid_t nb_wait4(pid_t pid, int *status, struct rusage *usage);

/// Decoders for wait status macros (function-like macros are not callable from Swift).
int nb_exited(int status);
int nb_exit_status(int status);
int nb_signaled(int status);
int nb_term_signal(int status);

/// Pins thread/process `tid` to `cpus` (sched_setaffinity). 0, or -1 with errno.
int nb_set_affinity(pid_t tid, const int *cpus, int ncpus);

/// The CPUs thread/process `tid` may run on, into `out` (at most `max`); the count, or -1 with errno.
int nb_get_affinity(pid_t tid, int *out, int max);

/// Sends `len` bytes of `buf` on the unix socket `sock` with the descriptor `fd` attached
/// (SCM_RIGHTS: QMP's `getfd`); the bytes sent, or -1 with errno.
long nb_send_with_fd(int sock, const void *buf, unsigned long len, int fd);

#endif
