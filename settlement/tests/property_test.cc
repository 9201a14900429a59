// Property tests on random streams (written by a helper; placeholder until then).
#include <gtest/gtest.h>
