/*
 * signals.c - blocked shutdown signals, collected with sigwait in the main thread.
 */
#include "services/signals.h"

#include <pthread.h>
#include <signal.h>

static void signals_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
}

void signals_block(void)
{
    sigset_t set;

    signals_set(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int signals_wait(void)
{
    sigset_t set;
    int sig = 0;

    signals_set(&set);
    while (sigwait(&set, &sig) != 0)
        ;
    return sig;
}
