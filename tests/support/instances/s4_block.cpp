// S4Block<float> and S4Block<double>, compiled once for all the test executables (see SSM_NOINLINE in
// ssm/core/config.hpp; the tests are compiled with SSM_EXTERN_TEMPLATES).
#include "ssm/layers/s4_block.hpp"

template class ssm::S4Block<float>;
template class ssm::S4Block<double>;
