/*
 * client.h - the command-line client of the HTTP API: upload, ls, info, rm.
 *
 * It talks to a running tessera (or the cluster's entry point) with libcurl
 * and needs no configuration file: the server comes from --server or
 * TESSERA_URL, the API key from --key or TESSERA_KEY.
 */
#ifndef CLI_CLIENT_H
#define CLI_CLIENT_H

#include "config/config.h"

/* Exit codes of the client commands. */
enum {
    CLIENT_EXIT_OK = 0,
    CLIENT_EXIT_API = 1,     /* the API answered an error (or an answer made no sense) */
    CLIENT_EXIT_USAGE = 2,   /* bad arguments, unreadable local file */
    CLIENT_EXIT_CONNECT = 3, /* the server could not be reached */
};

/*
 * client_cmd runs the client command argv[0] ("upload", "ls", "info", "rm")
 * with its own flags in argv[1..]; cfg is unused (may be NULL): the client
 * parses its own arguments. Returns a CLIENT_EXIT_ code. Blocks on the network.
 */
int client_cmd(const struct config *cfg, int argc, char **argv);

#endif
