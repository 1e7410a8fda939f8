// Compiled by ctest (CompileFail.*) with -ffast-math, -ffinite-math-only or -Ofast: ssm/core/config.hpp
// must refuse it with its #error. Not part of any executable (see tests/CMakeLists.txt). It includes
// the two headers every public header includes, so the check covers the whole library.
#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

int main() { return 0; }
