#include "nb_perfmon.h"

#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int nb_perf_event_open(struct perf_event_attr *attr, pid_t pid, int cpu, int group_fd, unsigned long flags) {
    return (int)syscall(__NR_perf_event_open, attr, pid, cpu, group_fd, flags);
}

int nb_perf_enable(int fd) { return ioctl(fd, PERF_EVENT_IOC_ENABLE, 0); }
int nb_perf_disable(int fd) { return ioctl(fd, PERF_EVENT_IOC_DISABLE, 0); }
int nb_perf_reset(int fd) { return ioctl(fd, PERF_EVENT_IOC_RESET, 0); }
