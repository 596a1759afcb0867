/* broker/redis_scripts.c - the Lua source of the history scripts (see redis_scripts.h) and their
 * SHA1. Lua 5.1 numbers are doubles: seq stays within 2^53, formatted with %d. */
#include "redis_scripts.h"

#include <openssl/evp.h>

const char broker_redis_append_lua[] =
    "local meta, hist, dkey = KEYS[1], KEYS[2], KEYS[3]\n"
    "if dkey then\n"
    "  local d = redis.call('GET', dkey)\n"
    "  if d then return {1, d} end\n"
    "end\n"
    "local m = redis.call('HMGET', meta, 'epoch', 'seq')\n"
    "local epoch, s = m[1], m[2]\n"
    "local seq\n"
    "if not epoch then\n"
    "  redis.call('DEL', hist)\n"
    "  epoch = ARGV[2]\n"
    "  seq = 1\n"
    "else\n"
    "  if #epoch > 32 or not string.find(epoch, '^[A-Za-z0-9_%-]+$') or not s or #s > 16 or\n"
    "     not string.find(s, '^%d+$') or tonumber(s) >= 9007199254740992 then\n"
    "    return redis.error_reply('ERR chat history meta invalid')\n"
    "  end\n"
    "  seq = tonumber(s) + 1\n"
    "end\n"
    "local ss = string.format('%d', seq)\n"
    "local msg = ARGV[7] .. ss .. ARGV[8] .. epoch .. ARGV[9]\n"
    "redis.call('XADD', hist, 'MAXLEN', '~', ARGV[3], ss .. '-0', 'm', msg)\n"
    "redis.call('HSET', meta, 'epoch', epoch, 'seq', ss)\n"
    "if ARGV[4] ~= '0' then\n"
    "  redis.call('PEXPIRE', meta, ARGV[4])\n"
    "  redis.call('PEXPIRE', hist, ARGV[4])\n"
    "end\n"
    "if dkey then\n"
    "  redis.call('SET', dkey, ss .. ':' .. epoch .. ':' .. ARGV[6], 'PX', ARGV[5])\n"
    "end\n"
    "return {0, seq, epoch, redis.call('PUBLISH', ARGV[1], msg)}\n";

const char broker_redis_read_lua[] =
    "local meta, hist = KEYS[1], KEYS[2]\n"
    "local m = redis.call('HMGET', meta, 'epoch', 'seq')\n"
    "local epoch, seq = m[1], m[2]\n"
    "if not epoch then\n"
    "  redis.call('DEL', hist)\n"
    "  redis.call('HSET', meta, 'epoch', ARGV[1], 'seq', '0')\n"
    "  if ARGV[2] ~= '0' then redis.call('PEXPIRE', meta, ARGV[2]) end\n"
    "  return {ARGV[1], '0', {}}\n"
    "end\n"
    "local e = {}\n"
    "if ARGV[5] ~= '0' then\n"
    "  if ARGV[3] == 'a' then\n"
    "    e = redis.call('XRANGE', hist, '(' .. ARGV[4] .. '-0', '+', 'COUNT', ARGV[5])\n"
    "  elseif ARGV[3] == 'b' then\n"
    "    e = redis.call('XREVRANGE', hist, '(' .. ARGV[4] .. '-0', '-', 'COUNT', ARGV[5])\n"
    "  else\n"
    "    e = redis.call('XREVRANGE', hist, '+', '-', 'COUNT', ARGV[5])\n"
    "  end\n"
    "end\n"
    "return {epoch, seq or false, e}\n";

int broker_redis_script_sha(chat_str_t script, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(script.p, script.len, md, &n, EVP_sha1(), NULL) != 1 || n * 2 != BROKER_SHA1_HEX)
        return -1;
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[BROKER_SHA1_HEX] = '\0';
    return 0;
}
