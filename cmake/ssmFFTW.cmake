# ssmFFTW.cmake: finds FFTW 3 in double (fftw3) and single (fftw3f) precision for ssm's FFTW backend.
#
# Included (not found through CMAKE_MODULE_PATH) by ssm's own CMakeLists.txt and by the installed
# ssmConfig.cmake, so a project with a FindFFTW3.cmake of its own keeps it: every name here is ssm's.
# Debian ships FFTW's pkg-config files but no CMake package, so this looks for the headers and
# libraries directly, helped by pkg-config when it is there. It defines the imported targets
#   ssm_deps::fftw3   double precision (fftw_*)
#   ssm_deps::fftw3f  single precision (fftwf_*)
# and SSM_FFTW3_FOUND. When FFTW's threads libraries are installed (Debian's libfftw3-dev ships them),
# also SSM_FFTW3_THREADS_FOUND and
#   ssm_deps::fftw3_threads   libfftw3_threads  (fftw_make_planner_thread_safe, ...), linking ssm_deps::fftw3
#   ssm_deps::fftw3f_threads  libfftw3f_threads (fftwf_make_planner_thread_safe, ...), linking ssm_deps::fftw3f

find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(SSM_PC_FFTW3 QUIET fftw3)
  pkg_check_modules(SSM_PC_FFTW3F QUIET fftw3f)
endif()

find_path(SSM_FFTW3_INCLUDE_DIR fftw3.h HINTS ${SSM_PC_FFTW3_INCLUDE_DIRS})
find_library(SSM_FFTW3_LIBRARY NAMES fftw3 HINTS ${SSM_PC_FFTW3_LIBRARY_DIRS})
find_library(SSM_FFTW3F_LIBRARY NAMES fftw3f HINTS ${SSM_PC_FFTW3F_LIBRARY_DIRS})
find_library(SSM_FFTW3_THREADS_LIBRARY NAMES fftw3_threads HINTS ${SSM_PC_FFTW3_LIBRARY_DIRS})
find_library(SSM_FFTW3F_THREADS_LIBRARY NAMES fftw3f_threads HINTS ${SSM_PC_FFTW3F_LIBRARY_DIRS})
mark_as_advanced(SSM_FFTW3_INCLUDE_DIR SSM_FFTW3_LIBRARY SSM_FFTW3F_LIBRARY SSM_FFTW3_THREADS_LIBRARY
                 SSM_FFTW3F_THREADS_LIBRARY)

set(SSM_FFTW3_FOUND FALSE)
set(SSM_FFTW3_THREADS_FOUND FALSE)
if(SSM_FFTW3_INCLUDE_DIR AND SSM_FFTW3_LIBRARY AND SSM_FFTW3F_LIBRARY)
  set(SSM_FFTW3_FOUND TRUE)
  if(SSM_FFTW3_THREADS_LIBRARY AND SSM_FFTW3F_THREADS_LIBRARY)
    set(SSM_FFTW3_THREADS_FOUND TRUE)
  endif()
  foreach(lib fftw3 fftw3f)
    string(TOUPPER ${lib} LIB)
    if(NOT TARGET ssm_deps::${lib})
      add_library(ssm_deps::${lib} UNKNOWN IMPORTED)
      set_target_properties(ssm_deps::${lib} PROPERTIES
        IMPORTED_LOCATION "${SSM_${LIB}_LIBRARY}"
        INTERFACE_INCLUDE_DIRECTORIES "${SSM_FFTW3_INCLUDE_DIR}")
    endif()
    if(SSM_FFTW3_THREADS_FOUND AND NOT TARGET ssm_deps::${lib}_threads)
      # The static libfftw3*_threads.a need the threads library; the shared ones already link it.
      find_package(Threads QUIET)
      add_library(ssm_deps::${lib}_threads UNKNOWN IMPORTED)
      set_target_properties(ssm_deps::${lib}_threads PROPERTIES
        IMPORTED_LOCATION "${SSM_${LIB}_THREADS_LIBRARY}"
        INTERFACE_INCLUDE_DIRECTORIES "${SSM_FFTW3_INCLUDE_DIR}"
        INTERFACE_LINK_LIBRARIES "ssm_deps::${lib};$<$<TARGET_EXISTS:Threads::Threads>:Threads::Threads>")
    endif()
  endforeach()
endif()
