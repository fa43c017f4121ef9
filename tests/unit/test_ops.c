/*
 * test_ops.c - unit tests of image/ops: the transform options parser, its
 * canonical form, the URL signature (vectors computed with openssl, see
 * below) and the plan of a rendition (output size per fit, memory).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
/* above: what cmocka.h needs before it, kept apart from the sorted block below */
#include "core/err.h"
#include "image/ops.h"

#include <cmocka.h>
#include <stdint.h>
#include <string.h>

static const struct ops_limits lim = {4096, 100000000};

/* parse splits "ops.ext" at the last dot, as the route does. */
static int parse(const char *s, struct img_ops *o, char *err, size_t cap)
{
    const char *dot = strrchr(s, '.');
    struct str ops = {s, dot ? (size_t)(dot - s) : strlen(s)};
    struct str ext = dot ? str_from(dot + 1) : (struct str){"", 0};

    return img_ops_parse(ops, ext, &lim, o, err, cap);
}

static void assert_canonical(const char *in, const char *want)
{
    struct img_ops o;
    char err[160] = "", canon[OPS_CANON_MAX];

    assert_int_equal(parse(in, &o, err, sizeof(err)), OK);
    img_ops_canonical(&o, canon, sizeof(canon));
    assert_string_equal(canon, want);
}

static void test_canonical(void **state)
{
    (void)state;
    assert_canonical("w:300.webp", "w:300.webp");
    assert_canonical("h:200,w:300.webp", "w:300,h:200.webp");
    assert_canonical("w:300,h:200.webp", "w:300,h:200.webp");
    /* defaults of fit, g, dpr and up go; q stays when given */
    assert_canonical("up:0,dpr:1,fit:contain,w:10.jpg", "w:10.jpg");
    assert_canonical("g:center,fit:cover,h:5,w:5.png", "w:5,h:5,fit:cover.png");
    assert_canonical("up:1,dpr:4,q:80,g:entropy,fit:cover,h:2,w:3.avif",
                     "w:3,h:2,fit:cover,g:entropy,q:80,dpr:4,up:1.avif");
    assert_canonical("h:7,fit:fill,w:4096.auto", "w:4096,h:7,fit:fill.auto");
    assert_canonical("w:1,h:1,fit:cover,g:attention,q:100,dpr:4,up:1.avif",
                     "w:1,h:1,fit:cover,g:attention,q:100,dpr:4,up:1.avif");
}

static void test_values(void **state)
{
    struct img_ops o;
    char err[160];

    (void)state;
    assert_int_equal(
        parse("w:300,h:200,fit:cover,g:attention,q:70,dpr:2,up:1.jpg", &o, err, sizeof(err)), OK);
    assert_int_equal(o.w, 300);
    assert_int_equal(o.h, 200);
    assert_int_equal(o.fit, OPS_FIT_COVER);
    assert_int_equal(o.g, OPS_G_ATTENTION);
    assert_int_equal(o.q, 70);
    assert_int_equal(o.dpr, 2);
    assert_true(o.up);
    assert_int_equal(o.format, IMG_JPEG);
    assert_int_equal(parse("h:9.auto", &o, err, sizeof(err)), OK);
    assert_int_equal(o.format, IMG_UNKNOWN);
    assert_int_equal(o.dpr, 1);
    assert_int_equal(o.w, 0);
    assert_int_equal(parse("w:4096.webp", &o, err, sizeof(err)), OK);
}

/* each bad input is refused, and the sentence starts with the key it names */
static void assert_bad(const char *in, const char *key)
{
    struct img_ops o;
    char err[160] = "";
    size_t n = strlen(key);

    assert_int_equal(parse(in, &o, err, sizeof(err)), E_INVALID);
    if (strncmp(err, key, n) != 0 || err[n] != ':')
        fail_msg("\"%s\": \"%s\" does not name %s", in, err, key);
}

static void test_errors_name_the_key(void **state)
{
    (void)state;
    assert_bad("w:0.webp", "w");
    assert_bad("w:4097.webp", "w");
    assert_bad("h:-1.webp", "h");
    assert_bad("w:+3.webp", "w");
    assert_bad("w:03.webp", "w");
    assert_bad("w:3x.webp", "w");
    assert_bad("w:.webp", "w");
    assert_bad("w:9999999999.webp", "w");
    assert_bad("w:1,w:2.webp", "w");
    assert_bad("h:1,h:1.webp", "h");
    assert_bad("w:5,fit:crop.webp", "fit");
    assert_bad("w:5,fit:cover.webp", "fit");
    assert_bad("h:5,fit:fill.webp", "fit");
    assert_bad("w:5,h:5,g:north,fit:cover.webp", "g");
    assert_bad("w:5,g:attention.webp", "g");
    assert_bad("w:5,h:5,fit:fill,g:center.webp", "g");
    assert_bad("w:5,q:0.webp", "q");
    assert_bad("w:5,q:101.webp", "q");
    assert_bad("w:5,q:1,q:2.webp", "q");
    assert_bad("w:5,dpr:5.webp", "dpr");
    assert_bad("w:5,dpr:0.webp", "dpr");
    assert_bad("w:5,dpr:1.5.webp", "dpr");
    assert_bad("w:5,up:2.webp", "up");
    assert_bad("w:5,up:yes.webp", "up");
    assert_bad("w:5.gif", "ext");
    assert_bad("w:5.jpeg", "ext");
    assert_bad("w:5.WEBP", "ext");
    assert_bad("w:5", "ext");
    assert_bad("q:50.webp", "w");
    assert_bad("fit:contain.webp", "w");
    assert_bad(".webp", "w");
    assert_bad("x:5,w:5.webp", "x");
    assert_bad("W:5.webp", "W");
    assert_bad("w5.webp", "w5");
    assert_bad("w:5,.webp", "ops");
    assert_bad(",w:5.webp", "ops");
    /* the box is checked against max_pixels after dpr: 4096 x 4096 x 16 > 1e8 */
    assert_bad("w:4096,h:4096,dpr:4.webp", "w");
}

/*
 * Vectors computed independently of this code:
 *   printf %s "$PATH" | openssl dgst -sha256 -hmac "$KEY" -binary | basenc --base64url |
 *   tr -d = | cut -c1-32
 */
#define KEY1 "k3y-for-tessera-transforms-0123456789"
#define KEY2 "second-key-rotated-in-abcdefghijkl"

static void test_signature_vectors(void **state)
{
    char sig[OPS_SIG_LEN + 1];

    (void)state;
    img_ops_sign(KEY1, strlen(KEY1), "Zk3v9QxT2bA", "w:300,h:200,fit:cover.webp", sig);
    assert_string_equal(sig, "On7l-qEMxxIAUWFf6K0m9eeqAodMWbu_");
    img_ops_sign(KEY1, strlen(KEY1), "Zk3v9QxT2bA", "w:640.auto", sig);
    assert_string_equal(sig, "hzUEzOIwlXfOMFXlIJJkI96oext-Vj-V");
    img_ops_sign(KEY1, strlen(KEY1), "Zk3v9QxT2bA",
                 "w:100,h:100,fit:cover,g:attention,q:70,dpr:2,up:1.avif", sig);
    assert_string_equal(sig, "08JmjhbSwC5dXQyss0KHzpi8BTBijhZt");
    img_ops_sign(KEY2, strlen(KEY2), "Zk3v9QxT2bA", "w:300,h:200,fit:cover.webp", sig);
    assert_string_equal(sig, "uxEpkGJ7q_TXq5YplRR4dXRL_CfT56_W");
}

static void test_signature_rotation(void **state)
{
    char *one[] = {KEY1};
    char *both[] = {KEY2, KEY1};
    char *other[] = {KEY2};
    const char *id = "Zk3v9QxT2bA", *c = "w:300,h:200,fit:cover.webp";

    (void)state;
    assert_true(img_ops_sig_ok(one, 1, id, c, "On7l-qEMxxIAUWFf6K0m9eeqAodMWbu_"));
    assert_true(img_ops_sig_ok(both, 2, id, c, "On7l-qEMxxIAUWFf6K0m9eeqAodMWbu_"));
    assert_true(img_ops_sig_ok(both, 2, id, c, "uxEpkGJ7q_TXq5YplRR4dXRL_CfT56_W"));
    assert_false(img_ops_sig_ok(other, 1, id, c, "On7l-qEMxxIAUWFf6K0m9eeqAodMWbu_"));
    /* another rendition, another image, a cut or longer signature, none at all */
    assert_false(img_ops_sig_ok(one, 1, id, "w:301,h:200,fit:cover.webp",
                                "On7l-qEMxxIAUWFf6K0m9eeqAodMWbu_"));
    assert_false(img_ops_sig_ok(one, 1, "Zk3v9QxT2bB", c, "On7l-qEMxxIAUWFf6K0m9eeqAodMWbu_"));
    assert_false(img_ops_sig_ok(one, 1, id, c, "On7l-qEMxxIAUWFf6K0m9eeqAodMWbu"));
    assert_false(img_ops_sig_ok(one, 1, id, c, "On7l-qEMxxIAUWFf6K0m9eeqAodMWbu_x"));
    assert_false(img_ops_sig_ok(one, 1, id, c, NULL));
    assert_false(img_ops_sig_ok(NULL, 0, id, c, "On7l-qEMxxIAUWFf6K0m9eeqAodMWbu_"));
}

static void plan(const char *in, const struct img_source *src, uint32_t w, uint32_t h)
{
    struct img_ops o;
    struct img_plan p;
    char err[160];

    assert_int_equal(parse(in, &o, err, sizeof(err)), OK);
    assert_int_equal(img_ops_plan(&o, src, &lim, &p, err, sizeof(err)), OK);
    if (p.width != w || p.height != h)
        fail_msg("%s: %ux%u, want %ux%u", in, p.width, p.height, w, h);
}

static void test_plan_sizes(void **state)
{
    const struct img_source src = {IMG_JPEG, 4000, 3000, 1, 2000000};
    const struct img_source small = {IMG_PNG, 400, 300, 1, 1000};

    (void)state;
    plan("w:1024.webp", &src, 1024, 768);
    plan("h:300.webp", &src, 400, 300);
    plan("w:1000,h:1000.webp", &src, 1000, 750);
    plan("w:100,dpr:3.webp", &src, 300, 225);
    plan("w:300,h:300,fit:cover.webp", &src, 300, 300);
    plan("w:300,h:100,fit:fill.webp", &src, 300, 100);
    /* up:0 never enlarges: contain keeps the source, cover and fill shrink the box */
    plan("w:800.webp", &small, 400, 300);
    plan("w:800,up:1.webp", &small, 800, 600);
    plan("w:800,h:800,fit:cover.webp", &small, 300, 300);
    plan("w:800,h:400,fit:fill.webp", &small, 400, 200);
    plan("w:800,h:800,fit:cover,up:1.webp", &small, 800, 800);
}

static void test_plan_limits_and_memory(void **state)
{
    const struct img_source tall = {IMG_PNG, 10, 100000, 1, 1000};
    const struct img_source big = {IMG_JPEG, 6000, 4000, 1, 5000000};
    const struct img_source anim = {IMG_WEBP, 200, 100, 4, 9000};
    struct img_ops o;
    struct img_plan p;
    char err[160] = "";

    (void)state;
    /* one side given, enlarged: the output is checked against max_pixels, naming the key */
    assert_int_equal(parse("w:4096,up:1,dpr:4.webp", &o, err, sizeof(err)), OK);
    assert_int_equal(img_ops_plan(&o, &tall, &lim, &p, err, sizeof(err)), E_INVALID);
    assert_memory_equal(err, "w:", 2);
    /* JPEG shrink-on-load: 6000x4000 to 1024 wide decodes at 1/4 (1500x1000) */
    assert_int_equal(parse("w:1024.webp", &o, err, sizeof(err)), OK);
    assert_int_equal(img_ops_plan(&o, &big, &lim, &p, err, sizeof(err)), OK);
    assert_int_equal(p.memory, 1500ull * 1000 * 4 + 1024ull * 683 * 4 + 5000000 + OPS_MEMORY_FIXED);
    assert_false(p.animated);
    assert_int_equal(p.quality, 80);
    /* an animation keeps its frames in WebP only */
    assert_int_equal(parse("w:100,q:60.webp", &o, err, sizeof(err)), OK);
    assert_int_equal(img_ops_plan(&o, &anim, &lim, &p, err, sizeof(err)), OK);
    assert_true(p.animated);
    assert_int_equal(p.quality, 60);
    assert_int_equal(parse("w:100.jpg", &o, err, sizeof(err)), OK);
    assert_int_equal(img_ops_plan(&o, &anim, &lim, &p, err, sizeof(err)), OK);
    assert_false(p.animated);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_errors_name_the_key),
        cmocka_unit_test(test_signature_vectors),
        cmocka_unit_test(test_signature_rotation),
        cmocka_unit_test(test_plan_sizes),
        cmocka_unit_test(test_plan_limits_and_memory),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
