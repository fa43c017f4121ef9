/*
 * signals.h - the shutdown signals every role waits for.
 */
#ifndef SERVICES_SIGNALS_H
#define SERVICES_SIGNALS_H

/* signals_block blocks SIGTERM, SIGINT and SIGPIPE in this thread (and threads it starts). */
void signals_block(void);

/* signals_wait waits for SIGTERM or SIGINT and returns its number. */
int signals_wait(void);

#endif
