SELECT id, 10 / d AS q FROM t WITH ('error.policy' = 'skip');
