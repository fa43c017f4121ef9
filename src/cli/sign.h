/*
 * sign.h - `tessera sign PATH`: print a signed transform URL.
 */
#ifndef CLI_SIGN_H
#define CLI_SIGN_H

struct config;

/* sign_cmd runs `tessera sign /i/{id}/t/{ops}.{ext}`; exit code 0, 1 (no key), 2 (usage). */
int sign_cmd(const struct config *cfg, int argc, char **argv);

#endif
