// The settlement store's key and value encodings (src/keys.h): every byte round-trips, fields
// never run into each other, keys sort as their fields do, and bytes no encoder wrote are
// refused rather than misread.
#include "keys.h"

#include <gtest/gtest.h>

#include <limits>
#include <random>
#include <string>

namespace gpuledger::settlement::keys {
namespace {

std::string EveryByte() {
  std::string s;
  for (int b = 0; b < 256; ++b) s.push_back(static_cast<char>(b));
  return s;
}

TEST(KeysTest, EveryByteOfEveryStringRoundTrips) {
  const std::vector<std::string> texts = {"",
                                          std::string(1, '\0'),
                                          "\x1f",
                                          "\xff",
                                          "a\x1f"
                                          "b",
                                          std::string("\0\x01", 2),
                                          "\x80\xfe",
                                          EveryByte()};
  for (const auto& a : texts) {
    for (const auto& b : texts) {
      const std::string key = KeyBuilder("d/").Str(a).Str(b).U32(7).I64(-5).U64(9).Take();
      KeyReader r(key);
      std::string got_a, got_b;
      uint32_t u32 = 0;
      int64_t i64 = 0;
      uint64_t u64 = 0;
      ASSERT_TRUE(r.Prefix("d/"));
      ASSERT_TRUE(r.Str(&got_a));
      ASSERT_TRUE(r.Str(&got_b));
      ASSERT_TRUE(r.U32(&u32) && r.I64(&i64) && r.U64(&u64));
      EXPECT_TRUE(r.Done());
      EXPECT_EQ(got_a, a);
      EXPECT_EQ(got_b, b);
      EXPECT_EQ(u32, 7u);
      EXPECT_EQ(i64, -5);
      EXPECT_EQ(u64, 9u);
    }
  }
}

// Keys sort as (string, string) tuples do: what orders lines on an invoice.
TEST(KeysTest, KeysSortAsTheirFields) {
  std::mt19937_64 rng(14);
  const std::string alphabet(
      "\0\x01\x1f"
      "a-b\xff",
      7);
  auto random_text = [&] {
    std::string s;
    for (int n = static_cast<int>(rng() % 4); n > 0; --n) s.push_back(alphabet[rng() % 7]);
    return s;
  };
  for (int i = 0; i < 5'000; ++i) {
    const std::string a1 = random_text(), b1 = random_text(), a2 = random_text(),
                      b2 = random_text();
    const std::string k1 = KeyBuilder().Str(a1).Str(b1).Take();
    const std::string k2 = KeyBuilder().Str(a2).Str(b2).Take();
    EXPECT_EQ(k1 < k2, std::tie(a1, b1) < std::tie(a2, b2));
  }
  for (int64_t a : {std::numeric_limits<int64_t>::min(), int64_t{-1}, int64_t{0}, int64_t{1},
                    std::numeric_limits<int64_t>::max()}) {
    for (int64_t b : {std::numeric_limits<int64_t>::min(), int64_t{-1}, int64_t{0}, int64_t{1},
                      std::numeric_limits<int64_t>::max()}) {
      EXPECT_EQ(KeyBuilder().I64(a).Take() < KeyBuilder().I64(b).Take(), a < b);
    }
  }
}

TEST(KeysTest, RefusesBytesNoEncoderWrote) {
  std::string out;
  EXPECT_FALSE(KeyReader("abc").Str(&out));                      // no terminator
  EXPECT_FALSE(KeyReader(std::string("a\0", 2)).Str(&out));      // cut in the terminator
  EXPECT_FALSE(KeyReader(std::string("a\0\x02", 3)).Str(&out));  // neither end nor escape
  uint64_t v = 0;
  EXPECT_FALSE(KeyReader("1234567").U64(&v));
  EXPECT_FALSE(KeyReader("x/").Prefix("y/"));
  EXPECT_FALSE(DecodeI128("12345").has_value());
  EXPECT_FALSE(DecodeU64("123456789").has_value());
}

TEST(KeysTest, CountersHoldWhatInt64CannotAndRoundTrip) {
  const __int128 big = static_cast<__int128>(std::numeric_limits<int64_t>::max()) * 4'294'967'295;
  for (__int128 v : {__int128{0}, __int128{-1}, big, -big}) {
    ASSERT_EQ(EncodeI128(v).size(), 16u);
    EXPECT_TRUE(DecodeI128(EncodeI128(v)) == v);
  }
}

}  // namespace
}  // namespace gpuledger::settlement::keys
