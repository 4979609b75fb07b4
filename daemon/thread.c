/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <signal.h>

#include "thread.h"

int thread_spawn(pthread_t *thread, void *(*fn)(void *), void *arg) {
        sigset_t all, old;
        int r;

        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        r = -pthread_create(thread, NULL, fn, arg);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return r;
}
