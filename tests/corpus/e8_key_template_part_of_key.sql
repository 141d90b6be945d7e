-- E8: a Redis key template that names only part of a composite row key would give two
-- rows one key (the later silently overwriting the earlier while the view says live).
-- Kind: a row view's key must name every column of the row key; refused at its line.
---- config
  - name: meas_cache
    store: cache
    from: public.meas
    key: "${CORPUS_ID}:meas:{id}"
---- schema
create table meas (id int, region text, v int, primary key (id, region));
---- before
insert into meas values (1, 'eu', 10);
---- expect validate 2
views[0].key: view meas_cache:
the key template names only part of the row key of public.meas: two rows that differ only in {region} would share one key; add {region} to the template
