# Flags every CPU translation unit shares. -ffp-contract=off: the numerics in
# csrc/common/math.h spell out each rounding so that CPU and CUDA agree bit for bit;
# the compiler must not fuse a*b+c on its own.
set(PYGEN_CPU_FLAGS -ffp-contract=off -fno-math-errno -Wall -Wextra -Wno-unused-parameter)

set(PYGEN_ISA_FLAGS_scalar "")
set(PYGEN_ISA_FLAGS_avx2 -mavx2 -mfma -mf16c)
set(PYGEN_ISA_FLAGS_avx512 -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mf16c)

# pygen_add_cpu_kernels(<target> <sources>...): one object library holding each kernel
# source compiled three times, into namespaces pygen::cpu_scalar, cpu_avx2 and
# cpu_avx512, for PYGEN_CPU_DISPATCH (csrc/common/cpu_isa.h) to choose from at run time.
function(pygen_add_cpu_kernels target)
  set(objects)
  foreach(isa scalar avx2 avx512)
    add_library(${target}_${isa} OBJECT ${ARGN})
    target_include_directories(${target}_${isa} PRIVATE ${PROJECT_SOURCE_DIR})
    target_compile_definitions(${target}_${isa} PRIVATE PYGEN_CPU_NS=cpu_${isa})
    target_compile_options(${target}_${isa} PRIVATE -O3 ${PYGEN_CPU_FLAGS} ${PYGEN_ISA_FLAGS_${isa}})
    list(APPEND objects $<TARGET_OBJECTS:${target}_${isa}>)
  endforeach()
  add_library(${target} STATIC ${objects})
  set_target_properties(${target} PROPERTIES LINKER_LANGUAGE CXX)
endfunction()
