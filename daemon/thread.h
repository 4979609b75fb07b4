/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <pthread.h>

/* Starts a thread that takes no signals: the event loop handles them
 * through signalfd, and a signal delivered to a worker would be lost to it.
 * Returns 0 or a negative errno. */
int thread_spawn(pthread_t *thread, void *(*fn)(void *), void *arg);
