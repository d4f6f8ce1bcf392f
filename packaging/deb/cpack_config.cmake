# SPDX-License-Identifier: MIT
# CPACK_PROJECT_CONFIG_FILE: a Debian package installs under /usr and /etc, never /usr/local.
if(CPACK_GENERATOR STREQUAL "DEB" AND NOT CPACK_PACKAGING_INSTALL_PREFIX STREQUAL "/usr")
    message(FATAL_ERROR "herald: the .deb needs a build configured with -DCMAKE_INSTALL_PREFIX=/usr "
                        "(this one installs under ${CPACK_PACKAGING_INSTALL_PREFIX})")
endif()
