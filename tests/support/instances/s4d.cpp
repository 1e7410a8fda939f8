// S4D<float> and S4D<double>, compiled once for all the test executables (see SSM_NOINLINE in
// ssm/core/config.hpp; the tests are compiled with SSM_EXTERN_TEMPLATES).
#include "ssm/layers/s4d.hpp"

template class ssm::S4D<float>;
template class ssm::S4D<double>;
