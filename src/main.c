/*
 * main.c - the tessera program: parse the subcommand and hand over to its role.
 */
#include "cli/cli.h"

int main(int argc, char **argv)
{
    return cli_main(argc, argv);
}
