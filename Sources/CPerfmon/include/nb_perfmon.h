#ifndef NB_PERFMON_H
#define NB_PERFMON_H

// The one module that owns the libpfm4 and perf_event headers. libpfm ships its own
// `struct perf_event_attr` in <perfmon/perf_event.h>: never include <linux/perf_event.h> anywhere
// in this package's module graph.
#include <perfmon/pfmlib_perf_event.h>
#include <sys/types.h>

// perf_event_open has no glibc wrapper: syscall(2) is variadic, which Swift cannot call.
int nb_perf_event_open(struct perf_event_attr *attr, pid_t pid, int cpu, int group_fd, unsigned long flags);

// ioctl(2) is variadic and PERF_EVENT_IOC_* are function-like macros: Swift can call neither.
int nb_perf_enable(int fd);
int nb_perf_disable(int fd);
int nb_perf_reset(int fd);

#endif
