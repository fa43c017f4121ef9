/*
 * cli.h - the command line: subcommand dispatch for every role and tool.
 */
#ifndef CLI_CLI_H
#define CLI_CLI_H

/* cli_main runs the subcommand named by argv[1]; returns the process exit code. */
int cli_main(int argc, char **argv);

#endif
