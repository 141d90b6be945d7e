// The pgderive binary: parse arguments, run. Everything else lives in the libraries.
#include <CLI/CLI.hpp>
#include <cstdio>

#ifndef PGDERIVE_VERSION
#define PGDERIVE_VERSION "unknown"
#endif

int main(int argc, char** argv) {
  CLI::App app{
      "pgderive: derive views in Redis, OpenSearch and PostgreSQL from one "
      "PostgreSQL change stream"};
  app.set_version_flag("--version", std::string("pgderive ") + PGDERIVE_VERSION);
  app.require_subcommand(0);
  CLI11_PARSE(app, argc, argv);
  if (argc == 1) std::fputs(app.help().c_str(), stdout);
  return 0;
}
