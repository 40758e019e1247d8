# SPDX-License-Identifier: Apache-2.0
# A package, so that this conftest is imported as image.conftest and never takes the module
# name "conftest" that tests/integration/test_*.py import from.
