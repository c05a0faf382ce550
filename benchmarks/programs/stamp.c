/* stamp FILE: append the CLOCK_MONOTONIC time in nanoseconds and a newline to FILE, exit 1.
 *
 * The restart workload runs it as a unit that fails at once: consecutive lines in FILE are
 * consecutive starts, timed by the unit itself, so both supervisors are measured the same
 * way and a C program adds ~1 ms of exec time instead of a shell's or Python's start-up.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: stamp FILE\n");
        return 2;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char line[32];
    int len = snprintf(line, sizeof line, "%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, line, (size_t)len) != len)
        return 2;
    close(fd);
    return 1;
}
