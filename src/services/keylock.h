/*
 * keylock.h - striped mutexes that serialise work on one blob key in a process.
 *
 * Putting a blob and taking a reference on it (upload), and dropping the last
 * reference and removing the blob (delete), each run under the key's stripe,
 * so a delete never removes bytes an upload is about to reference.
 */
#ifndef SERVICES_KEYLOCK_H
#define SERVICES_KEYLOCK_H

/* keylock_acquire locks the stripe of a 64-hex key; blocks. */
void keylock_acquire(const char *key);

/* keylock_release unlocks the stripe of key. */
void keylock_release(const char *key);

#endif
