// forge: the Forge command-line client. See `forge --help`.
#include <iostream>

#include "cli/app.h"

int main(int argc, char** argv) {
  return forge::cli::RunForgeCli(argc, argv, std::cout, std::cerr);
}
