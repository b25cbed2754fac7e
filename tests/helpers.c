/* tests/helpers.c - anchors the kg_test_helpers library so it exists even
 * before tests/helpers/ holds any file; the helpers themselves live there. */
int kg_test_helpers_anchor;
