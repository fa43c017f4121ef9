/*
 * keylock.c - 256 stripes chosen by the first two hex digits of the key.
 */
#include "services/keylock.h"

#include <pthread.h>

#define KEYLOCK_STRIPES 256

static pthread_mutex_t stripes[KEYLOCK_STRIPES] = {[0 ... KEYLOCK_STRIPES - 1] =
                                                       PTHREAD_MUTEX_INITIALIZER};

static unsigned keylock_hex(char c)
{
    return c >= 'a' ? (unsigned)(c - 'a' + 10) : (unsigned)(c - '0');
}

static pthread_mutex_t *keylock_stripe(const char *key)
{
    return &stripes[(keylock_hex(key[0]) << 4 | keylock_hex(key[1])) % KEYLOCK_STRIPES];
}

void keylock_acquire(const char *key)
{
    pthread_mutex_lock(keylock_stripe(key));
}

void keylock_release(const char *key)
{
    pthread_mutex_unlock(keylock_stripe(key));
}
