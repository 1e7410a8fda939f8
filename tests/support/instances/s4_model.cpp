// S4Model<float> and S4Model<double>, compiled once for all the test executables (see SSM_NOINLINE in
// ssm/core/config.hpp; the tests are compiled with SSM_EXTERN_TEMPLATES).
#include "ssm/models/s4_model.hpp"

template class ssm::S4Model<float>;
template class ssm::S4Model<double>;
