# FunctionBench "AES": AES-128 in CTR mode, written in pure Python here (FunctionBench uses the
# pure-Python pyaes; the point is CPU-bound interpreted code). The cipher checks itself against
# the example vector of FIPS-197 (appendix C.1) at import. Arguments: size_kb (default 16),
# seed (default 1).
import os
import random
import time


def _xtime(a):
    a <<= 1
    return (a ^ 0x11B) if a & 0x100 else a


def _tables():
    # GF(2^8) with the AES polynomial: powers of the generator 3 give logarithms, inverses give
    # the S-box after the affine transformation.
    exp, log = [0] * 255, [0] * 256
    x = 1
    for i in range(255):
        exp[i], log[x] = x, i
        x ^= _xtime(x)
    sbox = [0] * 256
    for a in range(256):
        b = exp[(255 - log[a]) % 255] if a else 0
        s = b
        for shift in range(1, 5):
            s ^= ((b << shift) | (b >> (8 - shift))) & 0xFF
        sbox[a] = s ^ 0x63
    mul2 = [_xtime(a) for a in range(256)]
    mul3 = [m ^ a for a, m in enumerate(mul2)]
    return sbox, mul2, mul3


SBOX, MUL2, MUL3 = _tables()


def expand_key(key):
    if len(key) != 16:
        raise ValueError("AES-128 takes a 16-byte key")
    words = [list(key[i:i + 4]) for i in range(0, 16, 4)]
    rcon = 1
    for i in range(4, 44):
        t = list(words[i - 1])
        if i % 4 == 0:
            t = [SBOX[t[1]] ^ rcon, SBOX[t[2]], SBOX[t[3]], SBOX[t[0]]]
            rcon = _xtime(rcon)
        words.append([a ^ b for a, b in zip(words[i - 4], t)])
    return [sum(words[4 * r:4 * r + 4], []) for r in range(11)]


def encrypt_block(round_keys, block):
    s = [b ^ k for b, k in zip(block, round_keys[0])]
    for r in range(1, 11):
        s = [SBOX[b] for b in s]
        # ShiftRows: row j (bytes j, j+4, j+8, j+12) turns left by j.
        s = [s[(j + 4 * ((c + j) % 4))] for c in range(4) for j in range(4)]
        if r < 10:
            mixed = []
            for c in range(0, 16, 4):
                a0, a1, a2, a3 = s[c:c + 4]
                mixed += [MUL2[a0] ^ MUL3[a1] ^ a2 ^ a3, a0 ^ MUL2[a1] ^ MUL3[a2] ^ a3,
                          a0 ^ a1 ^ MUL2[a2] ^ MUL3[a3], MUL3[a0] ^ a1 ^ a2 ^ MUL2[a3]]
            s = mixed
        s = [b ^ k for b, k in zip(s, round_keys[r])]
    return bytes(s)


def ctr(key, nonce, data):
    # Encryption and decryption are the same operation in CTR mode.
    keys = expand_key(key)
    out = bytearray()
    for i in range(0, len(data), 16):
        stream = encrypt_block(keys, nonce + (i // 16).to_bytes(8, "big"))
        out += bytes(a ^ b for a, b in zip(data[i:i + 16], stream))
    return bytes(out)


FIPS197_OK = encrypt_block(expand_key(bytes(range(16))), bytes.fromhex("00112233445566778899aabbccddeeff")) \
    == bytes.fromhex("69c4e0d86a7b0430d8cdb78070b4c55a")


def main(args):
    size_kb = int(args.get("size_kb", 16))
    if size_kb < 0 or size_kb > 16384:
        raise ValueError("size_kb must be in 0..16384, got %d" % size_kb)
    rnd = random.Random(int(args.get("seed", 1)))
    key, nonce = bytes(rnd.randrange(256) for _ in range(16)), os.urandom(8)
    message = bytes(rnd.randrange(256) for _ in range(size_kb * 1024))
    t = time.perf_counter()
    cipher = ctr(key, nonce, message)
    enc_ms = (time.perf_counter() - t) * 1000
    back = ctr(key, nonce, cipher)
    return {"body": {"bytes": len(message), "fips197_ok": FIPS197_OK, "roundtrip": back == message,
                     "changed": cipher != message or not message, "encrypt_ms": round(enc_ms, 3)}}
