/* tests/unit/obs/test_log.c - src/obs/log.c through keygate/log.h: the
 * daemon's own lines, text and JSON. stderr is pointed at a temporary file
 * while a test logs, then read back line by line. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "keygate/log.h"

struct capture {
    char path[64];
    int saved; /* the real stderr */
};

static void
capture_start(struct capture *c)
{
    int fd;

    snprintf(c->path, sizeof(c->path), "/tmp/kg-log-test-XXXXXX");
    fd = mkstemp(c->path);
    assert_true(fd >= 0);
    c->saved = dup(STDERR_FILENO);
    assert_true(c->saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    close(fd);
}

/* Puts stderr back and returns what was written (malloc'd). */
static char *
capture_end(struct capture *c)
{
    FILE *f;
    char *buf = calloc(1, 65536);
    size_t n;

    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    assert_non_null(buf);
    f = fopen(c->path, "rb");
    assert_non_null(f);
    n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    unlink(c->path);
    return buf;
}

static int
reset(void **state)
{
    (void)state;
    kg_log_set_level(KG_LOG_INFO);
    kg_log_set_format(KG_LOG_TEXT);
    return 0;
}

/* Parses every line of out as a log object; returns how many, each one
 * checked for string time, level and message. msgs[i] gets line i's message
 * (borrowed from roots[i], which the caller json_decref()s). */
static size_t
json_lines(char *out, json_t **roots, const char **levels, const char **msgs, size_t max)
{
    size_t n = 0;
    char *save = NULL;

    assert_int_equal(out[strlen(out) - 1], '\n');
    for (char *line = strtok_r(out, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);

        if (o == NULL)
            fail_msg("not JSON (%s): %s", jerr.text, line);
        assert_true(json_is_object(o));
        assert_int_equal(json_object_size(o), 3);
        assert_true(json_is_string(json_object_get(o, "time")));
        assert_int_equal(strlen(json_string_value(json_object_get(o, "time"))),
                         strlen("2026-01-02T03:04:05.678Z"));
        assert_true(json_is_string(json_object_get(o, "level")));
        assert_true(json_is_string(json_object_get(o, "message")));
        assert_true(n < max);
        roots[n] = o;
        levels[n] = json_string_value(json_object_get(o, "level"));
        msgs[n] = json_string_value(json_object_get(o, "message"));
        n++;
    }
    return n;
}

static void
test_json_lines_are_one_object_each_with_time_level_and_message(void **state)
{
    struct capture c;
    json_t *roots[4];
    const char *levels[4], *msgs[4];
    char *out;

    (void)state;
    kg_log_set_format(KG_LOG_JSON);
    capture_start(&c);
    kg_log_info("reloaded \"%s\"", "/etc/keygate/keygate.conf");
    kg_log_error("%s:%d: unknown directive \"x\"", "/tmp/k.conf", 3);
    kg_log_debug("not written at info");
    out = capture_end(&c);
    assert_int_equal(json_lines(out, roots, levels, msgs, 4), 2);
    assert_string_equal(levels[0], "info");
    assert_string_equal(msgs[0], "reloaded \"/etc/keygate/keygate.conf\"");
    assert_string_equal(levels[1], "error");
    assert_string_equal(msgs[1], "/tmp/k.conf:3: unknown directive \"x\"");
    json_decref(roots[0]);
    json_decref(roots[1]);
    free(out);
}

static void
test_a_long_message_of_quotes_stays_one_valid_json_line(void **state)
{
    struct capture c;
    json_t *roots[2];
    const char *levels[2], *msgs[2];
    char big[1100], *out;

    (void)state;
    /* Every quote doubles when escaped: more than the text line's buffer. */
    memset(big, '"', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    kg_log_set_format(KG_LOG_JSON);
    capture_start(&c);
    kg_log_warnx("%s", big);
    out = capture_end(&c);
    assert_int_equal(json_lines(out, roots, levels, msgs, 2), 1);
    assert_string_equal(levels[0], "warn");
    assert_true(strlen(msgs[0]) >= 1000);
    json_decref(roots[0]);
    free(out);
}

static void
test_a_message_that_is_not_utf8_is_still_valid_json(void **state)
{
    struct capture c;
    json_t *roots[2];
    const char *levels[2], *msgs[2];
    char *out;

    (void)state;
    kg_log_set_format(KG_LOG_JSON);
    capture_start(&c);
    kg_log_info("file \"%s\" is odd", "caf\xe9\xff.conf");
    out = capture_end(&c);
    assert_int_equal(json_lines(out, roots, levels, msgs, 2), 1);
    assert_string_equal(msgs[0], "file \"caf??.conf\" is odd");
    json_decref(roots[0]);
    free(out);
}

static void
test_text_lines_carry_time_and_level_and_the_level_filters(void **state)
{
    struct capture c;
    char *out;

    (void)state;
    kg_log_set_level(KG_LOG_WARN);
    capture_start(&c);
    kg_log_info("hidden");
    kg_log_warnx("shown %d", 1);
    out = capture_end(&c);
    assert_null(strstr(out, "hidden"));
    assert_non_null(strstr(out, "Z warn shown 1\n"));
    assert_int_equal(out[4], '-');
    free(out);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_json_lines_are_one_object_each_with_time_level_and_message, reset, reset),
        cmocka_unit_test_setup_teardown(test_a_long_message_of_quotes_stays_one_valid_json_line,
                                        reset, reset),
        cmocka_unit_test_setup_teardown(test_a_message_that_is_not_utf8_is_still_valid_json, reset,
                                        reset),
        cmocka_unit_test_setup_teardown(test_text_lines_carry_time_and_level_and_the_level_filters,
                                        reset, reset),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
