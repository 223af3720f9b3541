/* A disk whose flushes are slow, for bench/cpu_share.py: LD_PRELOAD this library and every
 * fsync/fdatasync of the process waits SLOW_FSYNC_S seconds (default 5) before flushing.
 * Build: gcc -shared -fPIC -O2 -o slow_fsync.so bench/slow_fsync.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void wait_a_while(void) {
    const char *value = getenv("SLOW_FSYNC_S");
    double seconds = value ? atof(value) : 5.0;
    struct timespec pause = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&pause, NULL);
}

int fsync(int fd) {
    static int (*real_fsync)(int);
    if (!real_fsync) real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    wait_a_while();
    return real_fsync(fd);
}

int fdatasync(int fd) {
    static int (*real_fdatasync)(int);
    if (!real_fdatasync) real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    wait_a_while();
    return real_fdatasync(fd);
}
