/* stdio_flood COUNT [--line-buffered]: COUNT numbered 100-byte lines through C stdio.
 *
 * Line i is "%010d" of i, a space, 88 'x' and a newline, as tests/programs/flood.c writes
 * them.  By default stdout is fully buffered in 8 KiB (setvbuf _IOFBF 8192): each write(2)
 * is exactly 8192 bytes and cuts a line in two, as any C program writing to a pipe does.
 * (flood.c's block mode writes 8100-byte blocks of whole lines, which never cuts a line:
 * a supervisor that forwards reads as they come would look better than it is.)
 * --line-buffered is _IOLBF: one write(2) per line, like `stdbuf -oL`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: stdio_flood COUNT [--line-buffered]\n");
        return 2;
    }
    long count = strtol(argv[1], NULL, 10);
    int line_buffered = argc > 2 && strcmp(argv[2], "--line-buffered") == 0;
    static char buf[8192];
    setvbuf(stdout, buf, line_buffered ? _IOLBF : _IOFBF, sizeof buf);
    char line[101];
    memset(line, 'x', 100);
    line[99] = '\n';
    line[100] = '\0';
    for (long i = 0; i < count; i++) {
        char num[16];
        snprintf(num, sizeof num, "%010ld ", i % 10000000000L);
        memcpy(line, num, 11);
        if (fwrite(line, 1, 100, stdout) != 100)
            return 1;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
