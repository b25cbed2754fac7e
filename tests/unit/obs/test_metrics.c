/* tests/unit/obs/test_metrics.c - src/obs/metrics.c through keygate/metrics.h:
 * the exposition text (HELP and TYPE for every metric, cumulative buckets
 * ending in +Inf, _sum and _count) and what each counter hook adds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/metrics.h"

static int
reset(void **state)
{
    (void)state;
    kg_metrics_reset();
    return 0;
}

static char *
render(void)
{
    struct kg_metrics_gauges g = {.keys_known = true,
                                  .keys_active = 3,
                                  .keys_expired = 2,
                                  .keys_revoked = 1,
                                  .reload_age_s = 1.5,
                                  .connections = 4};
    size_t len = 0;
    char *text = kg_metrics_render(&g, &len);

    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

/* The value of the sample line that starts with exactly `series ` or -1. */
static double
sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    const char *p = text;

    while (p != NULL && *p != '\0') {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return -1;
}

static void
test_every_metric_has_help_and_type(void **state)
{
    static const char *const want[][2] = {
        {"keygate_build_info", "gauge"},
        {"keygate_requests_total", "counter"},
        {"keygate_request_duration_seconds", "histogram"},
        {"keygate_upstream_duration_seconds", "histogram"},
        {"keygate_upstream_responses_total", "counter"},
        {"keygate_keys", "gauge"},
        {"keygate_key_reload_age_seconds", "gauge"},
        {"keygate_connections", "gauge"},
    };
    char *text = render();
    char line[160];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        snprintf(line, sizeof(line), "# HELP %s ", want[i][0]);
        if (strstr(text, line) == NULL)
            fail_msg("no HELP for %s in:\n%s", want[i][0], text);
        snprintf(line, sizeof(line), "\n# TYPE %s %s\n", want[i][0], want[i][1]);
        if (strstr(text, line) == NULL)
            fail_msg("no TYPE %s for %s in:\n%s", want[i][1], want[i][0], text);
    }
    assert_true(text[strlen(text) - 1] == '\n');
    free(text);
}

static void
test_every_sample_line_names_a_declared_metric(void **state)
{
    char *text = render();
    char *copy = strdup(text);
    char *save = NULL, *line, *cut, name[128], decl[160];

    (void)state;
    assert_non_null(copy);
    for (line = strtok_r(copy, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        size_t n;

        if (line[0] == '#')
            continue;
        n = strcspn(line, "{ ");
        assert_true(n > 0 && n < sizeof(name));
        memcpy(name, line, n);
        name[n] = '\0';
        /* A histogram's series carry a suffix after the declared name. */
        cut = strstr(name, "_seconds_");
        if (cut != NULL)
            cut[strlen("_seconds")] = '\0';
        snprintf(decl, sizeof(decl), "# TYPE %s ", name);
        if (strstr(text, decl) == NULL)
            fail_msg("sample \"%s\" has no TYPE line", line);
        assert_non_null(strchr(line, ' '));
    }
    free(copy);
    free(text);
}

static void
test_gauges_show_what_the_scraper_gave(void **state)
{
    char *text = render();

    (void)state;
    assert_true(sample(text, "keygate_build_info{version=\"" KEYGATE_VERSION "\"}") == 1);
    assert_true(sample(text, "keygate_keys{state=\"active\"}") == 3);
    assert_true(sample(text, "keygate_keys{state=\"expired\"}") == 2);
    assert_true(sample(text, "keygate_keys{state=\"revoked\"}") == 1);
    assert_true(sample(text, "keygate_key_reload_age_seconds") == 1.5);
    assert_true(sample(text, "keygate_connections") == 4);
    free(text);
}

static void
test_unknown_gauges_are_left_out(void **state)
{
    struct kg_metrics_gauges g = {.reload_age_s = -1};
    char *text = kg_metrics_render(&g, NULL);

    (void)state;
    assert_non_null(text);
    assert_null(strstr(text, "keygate_keys"));
    assert_null(strstr(text, "keygate_key_reload_age_seconds"));
    assert_non_null(strstr(text, "keygate_connections 0\n"));
    free(text);
}

static void
test_each_outcome_counts_separately(void **state)
{
    char *text;

    (void)state;
    kg_metrics_count(KG_OUTCOME_ALLOWED);
    kg_metrics_count(KG_OUTCOME_ALLOWED);
    kg_metrics_count(kg_metrics_outcome_of(KG_DENY_EXPIRED));
    kg_metrics_count(kg_metrics_outcome_of(KG_DENY_ROLE));
    kg_metrics_count(kg_metrics_outcome_of(KG_DENY_THROTTLED));
    kg_metrics_count(kg_metrics_outcome_of(KG_DENY_QUOTA));
    kg_metrics_count(KG_OUTCOME_UPSTREAM_ERROR);
    kg_metrics_count(KG_OUTCOME_NONE);
    text = render();
    assert_true(sample(text, "keygate_requests_total{outcome=\"allowed\"}") == 2);
    assert_true(sample(text, "keygate_requests_total{outcome=\"unauthenticated\"}") == 1);
    assert_true(sample(text, "keygate_requests_total{outcome=\"forbidden\"}") == 1);
    assert_true(sample(text, "keygate_requests_total{outcome=\"rate_limited\"}") == 1);
    assert_true(sample(text, "keygate_requests_total{outcome=\"quota_exceeded\"}") == 1);
    assert_true(sample(text, "keygate_requests_total{outcome=\"upstream_error\"}") == 1);
    assert_true(sample(text, "keygate_requests_total{outcome=\"bad_request\"}") == 0);
    free(text);
}

static void
test_verdicts_map_to_their_outcomes(void **state)
{
    (void)state;
    assert_int_equal(kg_metrics_outcome_of(KG_ALLOW), KG_OUTCOME_ALLOWED);
    assert_int_equal(kg_metrics_outcome_of(KG_DENY_NO_CREDENTIAL), KG_OUTCOME_UNAUTHENTICATED);
    assert_int_equal(kg_metrics_outcome_of(KG_DENY_INVALID), KG_OUTCOME_UNAUTHENTICATED);
    assert_int_equal(kg_metrics_outcome_of(KG_DENY_SCOPE), KG_OUTCOME_FORBIDDEN);
    assert_int_equal(kg_metrics_outcome_of(KG_DENY_NO_SCOPES), KG_OUTCOME_FORBIDDEN);
    assert_int_equal(kg_metrics_outcome_of(KG_DENY_NO_ROUTE), KG_OUTCOME_FORBIDDEN);
    assert_int_equal(kg_metrics_outcome_of(KG_DENY_RATE), KG_OUTCOME_RATE_LIMITED);
}

static void
test_histogram_buckets_are_cumulative_up_to_inf(void **state)
{
    const char *h = "keygate_request_duration_seconds";
    char series[128];
    char *text;

    (void)state;
    kg_metrics_request_time(50);       /* 0.00005 s: first bucket */
    kg_metrics_request_time(100);      /* exactly on the 0.0001 bound: still in it */
    kg_metrics_request_time(3000);     /* 0.003 s */
    kg_metrics_request_time(20000000); /* 20 s: above every bound */
    text = render();
    snprintf(series, sizeof(series), "%s_bucket{le=\"0.0001\"}", h);
    assert_true(sample(text, series) == 2);
    snprintf(series, sizeof(series), "%s_bucket{le=\"0.0025\"}", h);
    assert_true(sample(text, series) == 2);
    snprintf(series, sizeof(series), "%s_bucket{le=\"0.005\"}", h);
    assert_true(sample(text, series) == 3);
    snprintf(series, sizeof(series), "%s_bucket{le=\"10\"}", h);
    assert_true(sample(text, series) == 3);
    snprintf(series, sizeof(series), "%s_bucket{le=\"+Inf\"}", h);
    assert_true(sample(text, series) == 4);
    snprintf(series, sizeof(series), "%s_count", h);
    assert_true(sample(text, series) == 4);
    snprintf(series, sizeof(series), "%s_sum", h);
    assert_non_null(strstr(text, "keygate_request_duration_seconds_sum 20.003150\n"));
    /* The +Inf bucket comes last, then _sum, then _count. */
    assert_true(strstr(text, "_duration_seconds_bucket{le=\"10\"}") <
                strstr(text, "keygate_request_duration_seconds_bucket{le=\"+Inf\"}"));
    assert_true(strstr(text, "keygate_request_duration_seconds_bucket{le=\"+Inf\"}") <
                strstr(text, "keygate_request_duration_seconds_sum"));
    assert_true(strstr(text, "keygate_request_duration_seconds_sum") <
                strstr(text, "keygate_request_duration_seconds_count"));
    free(text);
}

static void
test_bucket_counts_never_decrease(void **state)
{
    const char *p;
    double prev = -1;
    char *text;
    int seen = 0;

    (void)state;
    kg_metrics_upstream(200, 700);
    kg_metrics_upstream(404, 70000);
    kg_metrics_upstream(503, 7000000);
    text = render();
    for (p = strstr(text, "keygate_upstream_duration_seconds_bucket{"); p != NULL;
         p = strstr(p + 1, "keygate_upstream_duration_seconds_bucket{")) {
        double v = strtod(strchr(p, ' ') + 1, NULL);

        assert_true(v >= prev);
        prev = v;
        seen++;
    }
    assert_int_equal(seen, 17);
    assert_true(prev == 3);
    assert_true(sample(text, "keygate_upstream_duration_seconds_count") == 3);
    free(text);
}

static void
test_upstream_statuses_count_by_class(void **state)
{
    char *text;

    (void)state;
    kg_metrics_upstream(200, 1);
    kg_metrics_upstream(204, 1);
    kg_metrics_upstream(302, 1);
    kg_metrics_upstream(404, 1);
    kg_metrics_upstream(599, 1);
    text = render();
    assert_true(sample(text, "keygate_upstream_responses_total{code=\"2xx\"}") == 2);
    assert_true(sample(text, "keygate_upstream_responses_total{code=\"3xx\"}") == 1);
    assert_true(sample(text, "keygate_upstream_responses_total{code=\"4xx\"}") == 1);
    assert_true(sample(text, "keygate_upstream_responses_total{code=\"5xx\"}") == 1);
    free(text);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_every_metric_has_help_and_type, reset),
        cmocka_unit_test_setup(test_every_sample_line_names_a_declared_metric, reset),
        cmocka_unit_test_setup(test_gauges_show_what_the_scraper_gave, reset),
        cmocka_unit_test_setup(test_unknown_gauges_are_left_out, reset),
        cmocka_unit_test_setup(test_each_outcome_counts_separately, reset),
        cmocka_unit_test_setup(test_verdicts_map_to_their_outcomes, reset),
        cmocka_unit_test_setup(test_histogram_buckets_are_cumulative_up_to_inf, reset),
        cmocka_unit_test_setup(test_bucket_counts_never_decrease, reset),
        cmocka_unit_test_setup(test_upstream_statuses_count_by_class, reset),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
