# Writes OUT: a C++ file defining pgderive::Migrations() from the migrations/*.sql files
# (NNNN_name.sql), run at build time so that an edited file is picked up.
file(GLOB files "${MIGRATIONS_DIR}/*.sql")
list(SORT files)
set(body "")
foreach(f ${files})
  get_filename_component(name "${f}" NAME)
  string(REGEX MATCH "^[0-9]+" number "${name}")
  math(EXPR version "${number}")
  file(READ "${f}" sql)
  string(APPEND body "      {${version}, \"${name}\", R\"pgderive_sql(${sql})pgderive_sql\"},\n")
endforeach()
file(WRITE "${OUT}.tmp" "// Generated from migrations/*.sql by migrations/migrations_embed.cmake. Do not edit.\n#include \"migrations/migrations.h\"\n\nnamespace pgderive {\n\nconst std::vector<Migration>& Migrations() {\n  static const std::vector<Migration> all = {\n${body}  };\n  return all;\n}\n\n}  // namespace pgderive\n")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different "${OUT}.tmp" "${OUT}")
