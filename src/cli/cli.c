/*
 * cli.c - subcommand dispatch (placeholder until the roles land).
 */
#include "cli/cli.h"

#include <stdio.h>

int cli_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "tessera: not yet\n");
    return 2;
}
