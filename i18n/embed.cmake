# cmake -DIN=file.mo -DOUT=file.cc -DNAME=kSymbol -P embed.cmake
# Writes OUT: the bytes of IN as `extern const unsigned char NAME[]` and `NAME##Size`, so that a
# compiled message catalog travels inside the binary (i18n/src/i18n.cc).
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" chars)
math(EXPR size "${chars} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE "${OUT}"
  "// Generated from ${IN} by i18n/embed.cmake. Do not edit.\n"
  "extern const unsigned char ${NAME}[];\n"
  "extern const unsigned long ${NAME}Size;\n"
  "const unsigned char ${NAME}[] = {${bytes}};\n"
  "const unsigned long ${NAME}Size = ${size};\n")
