/* Keeps rewriting a block of memory so that a live migration has pages to
 * resend: dirty MIB [RATE_MIB_PER_S]. A rate of 0 means as fast as it can.
 * One byte per 4 KiB page is enough to dirty the page. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGE 4096L
#define STEP_NS 10000000L /* 10 ms */

static long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long mib = argc > 1 ? atol(argv[1]) : 0;
    long rate = argc > 2 ? atol(argv[2]) : 0;
    if (mib <= 0)
        return 0;
    long pages = mib * 1024L * 1024L / PAGE;
    volatile unsigned char *mem = malloc(pages * PAGE);
    if (!mem) {
        perror("dirty: malloc");
        return 1;
    }
    memset((void *)mem, 1, pages * PAGE);
    printf("dirty: %ld MiB at %ld MiB/s\n", mib, rate);
    fflush(stdout);

    long per_step = rate > 0 ? rate * 1024L * 1024L / PAGE / (1000000000L / STEP_NS) : pages;
    if (per_step < 1)
        per_step = 1;
    long page = 0;
    unsigned char value = 2;
    long next = now_ns();
    for (;;) {
        for (long i = 0; i < per_step; i++) {
            mem[page * PAGE] = value;
            if (++page == pages) {
                page = 0;
                value++;
            }
        }
        if (rate > 0) {
            next += STEP_NS;
            long wait = next - now_ns();
            if (wait > 0) {
                struct timespec ts = {wait / 1000000000L, wait % 1000000000L};
                nanosleep(&ts, NULL);
            } else if (wait < -STEP_NS * 100) {
                next = now_ns(); /* fell far behind (guest paused): do not burst */
            }
        }
    }
}
