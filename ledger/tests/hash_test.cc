#include "ledger/hash.h"

#include <gtest/gtest.h>

namespace gpuledger::ledger {
namespace {

TEST(HashTest, Sha256OfKnownVector) {
  EXPECT_EQ(ToHex(Sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(HashTest, ChainHashCoversPrevSeqAndBytes) {
  const Digest a = ChainHash(kZeroDigest, 1, "x");
  EXPECT_NE(a, ChainHash(kZeroDigest, 2, "x"));
  EXPECT_NE(a, ChainHash(kZeroDigest, 1, "y"));
  EXPECT_NE(a, ChainHash(Sha256("p"), 1, "x"));
  // prev(32 zero bytes) || 00..01 || "x"
  std::string manual(32, '\0');
  manual += std::string("\0\0\0\0\0\0\0\1", 8);
  manual += "x";
  EXPECT_EQ(a, Sha256(manual));
}

TEST(HashTest, BytesRoundTrip) {
  Digest d = Sha256("q");
  Digest back{};
  ASSERT_TRUE(FromBytes(ToBytes(d), &back));
  EXPECT_EQ(d, back);
  EXPECT_FALSE(FromBytes("short", &back));
}

}  // namespace
}  // namespace gpuledger::ledger
