/*
 * test_safetensors.c — the safetensors reader on valid files, indexed shards
 * and every kind of broken input: each must give an error naming the file,
 * never a crash. Files are written under $TLM_TEST_OUT.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"

/* ------------------------------------------------------------ scratch files */

static char g_dir[4096]; /* scratch directory of this run */

static void path_in(char *buf, size_t cap, const char *sub, const char *name) {
    if (sub)
        snprintf(buf, cap, "%s/%s/%s", g_dir, sub, name);
    else
        snprintf(buf, cap, "%s/%s", g_dir, name);
}

static void make_subdir(const char *sub) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", g_dir, sub);
    assert_true(mkdir(p, 0755) == 0 || errno == EEXIST);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    /* a new file, not a truncated one: ext4 flushes truncated files on close,
     * which makes the fuzz loops below wait on the disk */
    unlink(path);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* A safetensors image: u64 LE header length, header, data. Caller frees. */
static uint8_t *st_image(const char *header, const void *data, size_t data_len, size_t *len) {
    size_t hl = strlen(header);
    *len = 8 + hl + data_len;
    uint8_t *img = malloc(*len);
    assert_non_null(img);
    for (int i = 0; i < 8; i++) img[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(img + 8, header, hl);
    if (data_len) memcpy(img + 8 + hl, data, data_len);
    return img;
}

static void write_st(const char *path, const char *header, const void *data, size_t data_len) {
    size_t len;
    uint8_t *img = st_image(header, data, data_len, &len);
    write_bytes(path, img, len);
    free(img);
}

/* ------------------------------------------------------------ the valid file */

/* a: F32 [2,3] = 0..5; b: F16 [4] = 1, -2, 0.5, 65504; c: BF16 [2] = 1.5, -3 */
static const char *VALID_HEADER =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"
    "\"c\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[32,36]}}  ";

static size_t valid_data(uint8_t *d) {
    float a[6] = {0, 1, 2, 3, 4, 5};
    memcpy(d, a, sizeof a);
    const uint16_t b[4] = {0x3c00, 0xc000, 0x3800, 0x7bff};
    memcpy(d + 24, b, sizeof b);
    const uint16_t c[2] = {0x3fc0, 0xc040};
    memcpy(d + 32, c, sizeof c);
    return 36;
}

static void check_valid_contents(const st_set *s) {
    const st_tensor *a = st_find(s, "a"), *b = st_find(s, "b"), *c = st_find(s, "c");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_null(st_find(s, "d"));
    assert_int_equal(a->dtype, ST_F32);
    assert_int_equal(a->n_dims, 2);
    assert_int_equal(a->shape[0], 2);
    assert_int_equal(a->shape[1], 3);
    assert_int_equal(a->n_elements, 6);
    assert_int_equal(a->nbytes, 24);
    assert_int_equal(b->dtype, ST_F16);
    assert_int_equal(c->dtype, ST_BF16);
    float out[6];
    tlm_error err;
    assert_int_equal(st_to_f32(a, out, &err), TLM_OK);
    for (int i = 0; i < 6; i++) assert_true(out[i] == (float)i);
    assert_int_equal(st_to_f32(b, out, &err), TLM_OK);
    assert_true(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0.5f && out[3] == 65504.0f);
    assert_int_equal(st_to_f32(c, out, &err), TLM_OK);
    assert_true(out[0] == 1.5f && out[1] == -3.0f);
}

static void test_valid_single_file(void **state) {
    (void)state;
    char path[4200];
    path_in(path, sizeof path, NULL, "valid.safetensors");
    uint8_t data[64];
    size_t n = valid_data(data);
    write_st(path, VALID_HEADER, data, n);
    tlm_error err;
    st_set *s = st_open_file(path, &err);
    if (!s) fail_msg("%s", err.msg);
    assert_int_equal(st_n_tensors(s), 3);
    for (size_t i = 0; i < 3; i++) assert_non_null(st_tensor_at(s, i));
    assert_null(st_tensor_at(s, 3));
    check_valid_contents(s);
    st_close(s);
    st_close(NULL);
}

static void test_dir_single_file(void **state) {
    (void)state;
    make_subdir("single");
    char path[4200], dir[4200];
    path_in(path, sizeof path, "single", "model.safetensors");
    path_in(dir, sizeof dir, NULL, "single");
    uint8_t data[64];
    write_st(path, VALID_HEADER, data, valid_data(data));
    tlm_error err;
    st_set *s = st_open_dir(dir, &err);
    if (!s) fail_msg("%s", err.msg);
    check_valid_contents(s);
    st_close(s);
}

static void test_dir_empty(void **state) {
    (void)state;
    make_subdir("empty");
    char dir[4200];
    path_in(dir, sizeof dir, NULL, "empty");
    tlm_error err;
    assert_null(st_open_dir(dir, &err));
    assert_int_not_equal(err.code, TLM_OK);
    assert_non_null(strstr(err.msg, dir));
    assert_non_null(strstr(err.msg, "model.safetensors"));
}

/* ------------------------------------------------------------ index + shards */

static const char *SHARD1 =
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}";
static const char *SHARD2 =
    "{\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]},"
    "\"c\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[8,12]}}";
static const char *INDEX_OK =
    "{\"metadata\":{\"total_size\":36},\"weight_map\":{"
    "\"a\":\"model-00001-of-00002.safetensors\","
    "\"b\":\"model-00002-of-00002.safetensors\","
    "\"c\":\"model-00002-of-00002.safetensors\"}}";

/* Writes a sharded directory `sub` with the given index text (NULL: none)
 * and shards (shard2 NULL: not written). */
static void write_sharded(const char *sub, const char *index, bool shard2) {
    make_subdir(sub);
    uint8_t data[64];
    valid_data(data);
    char p[4200];
    path_in(p, sizeof p, sub, "model-00001-of-00002.safetensors");
    write_st(p, SHARD1, data, 24);
    path_in(p, sizeof p, sub, "model-00002-of-00002.safetensors");
    if (shard2) write_st(p, SHARD2, data + 24, 12);
    else unlink(p);
    path_in(p, sizeof p, sub, "model.safetensors.index.json");
    if (index) write_bytes(p, index, strlen(index));
}

static void test_index_and_shards(void **state) {
    (void)state;
    write_sharded("sharded", INDEX_OK, true);
    char dir[4200];
    path_in(dir, sizeof dir, NULL, "sharded");
    tlm_error err;
    st_set *s = st_open_dir(dir, &err);
    if (!s) fail_msg("%s", err.msg);
    assert_int_equal(st_n_tensors(s), 3);
    check_valid_contents(s);
    st_close(s);
}

/* Opens dir `sub` and expects failure with a message holding each needle. */
static void expect_dir_error(const char *sub, const char *needle1, const char *needle2) {
    char dir[4200];
    path_in(dir, sizeof dir, NULL, sub);
    tlm_error err;
    st_set *s = st_open_dir(dir, &err);
    if (s) {
        st_close(s);
        fail_msg("%s: opened although broken", sub);
    }
    assert_int_not_equal(err.code, TLM_OK);
    if (!strstr(err.msg, needle1) || (needle2 && !strstr(err.msg, needle2)))
        fail_msg("%s: message '%s' lacks '%s' / '%s'", sub, err.msg, needle1,
                 needle2 ? needle2 : "");
    assert_null(strchr(err.msg, '\n'));
}

static void test_index_missing_shard(void **state) {
    (void)state;
    write_sharded("noshard", INDEX_OK, false);
    char want[4200];
    path_in(want, sizeof want, "noshard", "model-00002-of-00002.safetensors");
    expect_dir_error("noshard", want, "missing shard (named in model.safetensors.index.json)");
}

static void test_index_bad_shard_names(void **state) {
    (void)state;
    write_sharded("dotdot", "{\"weight_map\":{\"a\":\"../x.safetensors\"}}", true);
    expect_dir_error("dotdot", "../x.safetensors", "model.safetensors.index.json");
    write_sharded("slash", "{\"weight_map\":{\"a\":\"sub/x.safetensors\"}}", true);
    expect_dir_error("slash", "sub/x.safetensors", NULL);
    write_sharded("dotdot2", "{\"weight_map\":{\"a\":\"..\"}}", true);
    expect_dir_error("dotdot2", "model.safetensors.index.json", NULL);
}

static void test_index_tensor_absent(void **state) {
    (void)state;
    write_sharded("absent",
                  "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                  "\"zzz\":\"model-00002-of-00002.safetensors\"}}",
                  true);
    expect_dir_error("absent", "zzz", "model-00002-of-00002.safetensors");
    /* listed in the wrong shard */
    write_sharded("wrongshard",
                  "{\"weight_map\":{\"a\":\"model-00002-of-00002.safetensors\","
                  "\"b\":\"model-00002-of-00002.safetensors\"}}",
                  true);
    expect_dir_error("wrongshard", "'a'", NULL);
}

static void test_index_malformed(void **state) {
    (void)state;
    write_sharded("idxjson", "{\"weight_map\":", true);
    expect_dir_error("idxjson", "model.safetensors.index.json", "JSON");
    write_sharded("idxtype", "{\"weight_map\":[1,2]}", true);
    expect_dir_error("idxtype", "model.safetensors.index.json", "weight_map");
    write_sharded("idxval", "{\"weight_map\":{\"a\":7}}", true);
    expect_dir_error("idxval", "model.safetensors.index.json", "'a'");
    write_sharded("idxnomap", "{\"metadata\":{}}", true);
    expect_dir_error("idxnomap", "model.safetensors.index.json", "weight_map");
}

static void test_duplicate_across_shards(void **state) {
    (void)state;
    make_subdir("dup");
    uint8_t data[64];
    valid_data(data);
    char p[4200];
    path_in(p, sizeof p, "dup", "s1.safetensors");
    write_st(p, SHARD1, data, 24);
    path_in(p, sizeof p, "dup", "s2.safetensors");
    write_st(p, SHARD1, data, 24);
    path_in(p, sizeof p, "dup", "model.safetensors.index.json");
    const char *idx = "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}";
    write_bytes(p, idx, strlen(idx));
    expect_dir_error("dup", "'a'", "twice");
}

/* ------------------------------------------------------------ broken single files */

/* Writes bytes, opens them, expects an error naming the file; returns the
 * error code. */
static tlm_status expect_file_error(const char *label, const void *bytes, size_t len) {
    char path[4200];
    path_in(path, sizeof path, NULL, "broken.safetensors");
    write_bytes(path, bytes, len);
    tlm_error err;
    st_set *s = st_open_file(path, &err);
    if (s) {
        st_close(s);
        fail_msg("%s: opened although broken", label);
    }
    if (err.code == TLM_OK || !strstr(err.msg, path) || strchr(err.msg, '\n'))
        fail_msg("%s: bad message '%s'", label, err.msg);
    return err.code;
}

static tlm_status expect_header_error(const char *label, const char *header, size_t data_len) {
    uint8_t data[64] = {0};
    size_t len;
    uint8_t *img = st_image(header, data, data_len, &len);
    tlm_status rc = expect_file_error(label, img, len);
    free(img);
    return rc;
}

static void test_broken_headers(void **state) {
    (void)state;
    expect_file_error("empty file", "", 0);
    expect_file_error("short file", "\x05\0\0", 3);
    /* header length larger than the file */
    const uint8_t big[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    expect_file_error("length past end", big, sizeof big);
    const uint8_t huge[12] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}', ' ', ' '};
    expect_file_error("length 2^64-1", huge, sizeof huge);

    expect_header_error("not JSON", "{abc", 0);
    expect_header_error("truncated JSON", "{\"a\":{\"dtype\":\"F32\"", 0);
    expect_header_error("trailing garbage", "{} x", 0);
    expect_header_error("not an object", "[1,2,3]", 0);
    expect_header_error("string", "\"hello\"", 0);
    expect_header_error("metadata not object", "{\"__metadata__\":5}", 0);
    expect_header_error("entry not object", "{\"a\":[1]}", 0);
    expect_header_error("dtype number",
                        "{\"a\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_header_error("dtype missing", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_header_error("shape string",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4);
    expect_header_error("shape negative",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4);
    expect_header_error("shape fraction",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4);
    expect_header_error("shape of strings",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4);
    expect_header_error("offsets object",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}}}", 4);
    expect_header_error("offsets one",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4);
    expect_header_error("offsets three",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4);
    expect_header_error("offsets strings",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",\"4\"]}}",
                        4);
    expect_header_error("offsets past end",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4);
    expect_header_error("offsets huge",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
                        "\"data_offsets\":[18446744073709551612,18446744073709551616]}}",
                        4);
    expect_header_error("begin after end",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4);
    expect_header_error("product mismatch",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}",
                        24);
    expect_header_error("dtype size mismatch",
                        "{\"a\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16);
    expect_header_error("shape overflow",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],"
                        "\"data_offsets\":[0,0]}}",
                        0);
    expect_header_error("bytes overflow",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
                        "\"data_offsets\":[0,0]}}",
                        0);
    assert_int_equal(expect_header_error("five dims",
                                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],"
                                         "\"data_offsets\":[0,4]}}",
                                         4),
                     TLM_ERR_UNSUPPORTED);
    expect_header_error("duplicate key",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                        "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                        4);
}

/* A header length under the file size but over the sanity cap: the file is
 * sparse, so this costs no disk space. */
static void test_header_over_cap(void **state) {
    (void)state;
    char path[4200];
    path_in(path, sizeof path, NULL, "sparse.safetensors");
    const uint64_t header_len = 150ull << 20;
    uint8_t len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = (uint8_t)(header_len >> (8 * i));
    write_bytes(path, len_bytes, sizeof len_bytes);
    assert_int_equal(truncate(path, (off_t)(200ull << 20)), 0);
    tlm_error err;
    assert_null(st_open_file(path, &err));
    assert_int_equal(err.code, TLM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "limit"));
    unlink(path);
}

static void test_other_dtypes(void **state) {
    (void)state;
    char path[4200];
    path_in(path, sizeof path, NULL, "other.safetensors");
    const char *hdr = "{\"i\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                      "\"q\":{\"dtype\":\"Q4_FANCY\",\"shape\":[3],\"data_offsets\":[4,9]},"
                      "\"f\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[12,16]}}";
    uint8_t data[16] = {0};
    const float one = 1.0f;
    memcpy(data + 12, &one, 4);
    write_st(path, hdr, data, sizeof data);
    tlm_error err;
    st_set *s = st_open_file(path, &err);
    if (!s) fail_msg("%s", err.msg);
    const st_tensor *i8 = st_find(s, "i"), *q = st_find(s, "q"), *f = st_find(s, "f");
    assert_non_null(i8);
    assert_non_null(q);
    assert_non_null(f);
    assert_int_equal(i8->dtype, ST_OTHER);
    assert_int_equal(q->dtype, ST_OTHER);
    assert_int_equal(f->n_dims, 0);
    assert_int_equal(f->n_elements, 1);
    float out[4];
    assert_int_equal(st_to_f32(f, out, &err), TLM_OK);
    assert_true(out[0] == 1.0f);
    assert_int_equal(st_to_f32(i8, out, &err), TLM_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "I8"));
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(st_to_f32(q, out, &err), TLM_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "Q4_FANCY"));
    st_close(s);
}

static void test_nonexistent(void **state) {
    (void)state;
    char path[4200];
    path_in(path, sizeof path, NULL, "no-such.safetensors");
    tlm_error err;
    assert_null(st_open_file(path, &err));
    assert_int_equal(err.code, TLM_ERR_IO);
    assert_non_null(strstr(err.msg, path));
    assert_null(st_open_dir(path, &err));
    assert_non_null(strstr(err.msg, path));
    assert_null(st_open_file(g_dir, &err)); /* a directory */
    assert_non_null(strstr(err.msg, g_dir));
}

/* ------------------------------------------------------------ fuzzing */

static void test_every_truncation(void **state) {
    (void)state;
    uint8_t data[64];
    size_t len, n = valid_data(data);
    uint8_t *img = st_image(VALID_HEADER, data, n, &len);
    for (size_t cut = 0; cut < len; cut++) {
        char label[64];
        snprintf(label, sizeof label, "prefix of %zu bytes", cut);
        expect_file_error(label, img, cut);
    }
    free(img);
}

static uint64_t xorshift64(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Flips random bytes of the length field and header; whatever opens must
 * convert without reading outside its data. */
static void test_random_header_flips(void **state) {
    (void)state;
    uint8_t data[64];
    size_t len, n = valid_data(data);
    uint8_t *img = st_image(VALID_HEADER, data, n, &len);
    uint8_t *mut = malloc(len);
    assert_non_null(mut);
    size_t header_end = len - n;
    char path[4200];
    path_in(path, sizeof path, NULL, "flipped.safetensors");
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    int opened = 0, failed = 0;
    for (int iter = 0; iter < 1500; iter++) {
        memcpy(mut, img, len);
        int n_flips = 1 + (int)(xorshift64(&rng) % 3);
        for (int k = 0; k < n_flips; k++) {
            size_t at = (size_t)(xorshift64(&rng) % header_end);
            uint64_t r = xorshift64(&rng);
            /* half: a random byte; half: a JSON-significant character */
            static const char tokens[] = "{}[]\",:0123456789-. e";
            mut[at] = (r & 1) ? (uint8_t)(r >> 8) : (uint8_t)tokens[(r >> 8) % (sizeof tokens - 1)];
        }
        write_bytes(path, mut, len);
        tlm_error err;
        st_set *s = st_open_file(path, &err);
        if (!s) {
            failed++;
            if (err.code == TLM_OK || !strstr(err.msg, path))
                fail_msg("iteration %d: bad message '%s'", iter, err.msg);
            continue;
        }
        opened++;
        for (size_t i = 0; i < st_n_tensors(s); i++) {
            const st_tensor *t = st_tensor_at(s, i);
            if (t->dtype == ST_OTHER) continue;
            assert_int_equal(t->nbytes, t->n_elements * (t->dtype == ST_F32 ? 4 : 2));
            float *out = malloc((size_t)t->n_elements * sizeof(float) + 1);
            assert_non_null(out);
            assert_int_equal(st_to_f32(t, out, &err), TLM_OK);
            free(out);
        }
        st_close(s);
    }
    /* both outcomes must occur, or the mutations test nothing */
    print_message("header flips: %d opened, %d rejected\n", opened, failed);
    assert_true(failed > 0 && opened > 0);
    free(mut);
    free(img);
}

/* ------------------------------------------------------------ main */

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path);
}

/* Removes the scratch directory made by main() and everything in it. */
static void remove_tree(const char *dir) { nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

int main(void) {
    const char *out = getenv("TLM_TEST_OUT");
    if (!out || !*out) out = P_tmpdir;
    snprintf(g_dir, sizeof g_dir, "%s/safetensors-XXXXXX", out);
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "cannot create a scratch directory under %s: %s\n", out, strerror(errno));
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_single_file),
        cmocka_unit_test(test_dir_single_file),
        cmocka_unit_test(test_dir_empty),
        cmocka_unit_test(test_index_and_shards),
        cmocka_unit_test(test_index_missing_shard),
        cmocka_unit_test(test_index_bad_shard_names),
        cmocka_unit_test(test_index_tensor_absent),
        cmocka_unit_test(test_index_malformed),
        cmocka_unit_test(test_duplicate_across_shards),
        cmocka_unit_test(test_broken_headers),
        cmocka_unit_test(test_header_over_cap),
        cmocka_unit_test(test_other_dtypes),
        cmocka_unit_test(test_nonexistent),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_random_header_flips),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    if (failures == 0) remove_tree(g_dir);
    return failures;
}
