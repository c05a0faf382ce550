/* flood COUNT [--line-per-write]: write COUNT numbered 100-byte lines to stdout.
 *
 * Line i is "%010d" of i, a space, 88 'x' and a newline (100 bytes), so a reader can check
 * order and completeness from the sequence numbers alone.  By default stdio buffers 8 KiB
 * blocks; --line-per-write issues one write(2) per line, like a line-buffered program on a
 * terminal or pipe with PYTHONUNBUFFERED: the worst case for the log reader.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LINE 100

static int write_all(const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(STDOUT_FILENO, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: flood COUNT [--line-per-write]\n");
        return 2;
    }
    long count = strtol(argv[1], NULL, 10);
    int per_write = argc > 2 && strcmp(argv[2], "--line-per-write") == 0;
    static char block[8192];
    static char line[LINE + 1];
    memset(line, 'x', LINE);
    line[LINE - 1] = '\n';
    size_t used = 0;
    for (long i = 0; i < count; i++) {
        char num[32];
        snprintf(num, sizeof num, "%010ld ", i % 10000000000L);
        memcpy(line, num, 11); /* the number and a space; the rest stays 'x' */
        if (per_write) {
            if (write_all(line, LINE) < 0)
                return 1;
            continue;
        }
        if (used + LINE > sizeof block) {
            if (write_all(block, used) < 0)
                return 1;
            used = 0;
        }
        memcpy(block + used, line, LINE);
        used += LINE;
    }
    if (used > 0 && write_all(block, used) < 0)
        return 1;
    return 0;
}
