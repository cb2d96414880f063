//! The catalog DataFusion's SQL planner sees while planning one statement:
//! the statement's sources as schema-only tables, and the function library
//! of a default DataFusion session.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{plan_datafusion_err, TableReference};
use datafusion::config::ConfigOptions;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::planner::{ExprPlanner, TypePlanner};
use datafusion::logical_expr::{AggregateUDF, HigherOrderUDF, ScalarUDF, TableSource, WindowUDF};
use datafusion::optimizer::OptimizerRule;
use datafusion::prelude::SessionConfig;
use datafusion::sql::planner::ContextProvider;

/// Optimizer rules that are wrong for streaming plans, left out: one turns
/// a streaming aggregate into two stacked ones (which would aggregate a
/// changelog); the others replace the source with an empty relation.
const EXCLUDED_RULES: &[&str] = &[
    "single_distinct_aggregation_to_group_by",
    // a filter or LIMIT that keeps nothing would replace the source with an
    // empty relation, and a streaming plan must keep reading its source
    "eliminate_filter",
    "eliminate_limit",
];

/// A DataFusion session with the full function library and the optimizer
/// rules that are valid for streaming plans.
pub fn streaming_session_state() -> SessionState {
    // TIMESTAMPTZ columns, now() and instants parsed from text are UTC
    let config = SessionConfig::new().set_str("datafusion.execution.time_zone", "+00:00");
    let base = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    let rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = base
        .optimizers()
        .iter()
        .filter(|r| !EXCLUDED_RULES.contains(&r.name()))
        .cloned()
        .collect();
    // epoch-number time columns take intervals before any other planner sees them
    let mut planners = base.expr_planners().to_vec();
    planners.insert(0, Arc::new(crate::epoch_time::EpochArithmetic));
    let mut state = SessionStateBuilder::new_from_existing(base)
        .with_optimizer_rules(rules)
        .with_expr_planners(planners)
        .build();
    add_aliases(&mut state);
    state
        .register_udf(Arc::new(crate::header_function::header_udf()))
        .expect("registering HEADER cannot fail");
    state
        .register_udf(Arc::new(crate::within_marker::within_udf()))
        .expect("registering the WITHIN marker cannot fail");
    state
        .register_udf(Arc::new(crate::processing_time::now_udf()))
        .expect("replacing NOW cannot fail");
    state
        .register_udf(Arc::new(crate::regexp_extract::regexp_extract_udf()))
        .expect("registering REGEXP_EXTRACT cannot fail");
    if let Some(round) = state.scalar_functions().get("round").cloned() {
        let stable = ScalarUDF::new_from_impl(crate::decimal_round::StableRound::new(round));
        state
            .register_udf(Arc::new(stable))
            .expect("replacing ROUND cannot fail");
    }
    state
}

/// Names users of other engines expect, mapped onto DataFusion functions.
const AGGREGATE_ALIASES: &[(&str, &str)] = &[
    ("variance", "var_samp"),
    ("approx_count_distinct", "approx_distinct"),
    ("listagg", "string_agg"),
];

/// Scalar names of ksqlDB, Flink SQL and MySQL, mapped onto DataFusion's.
const SCALAR_ALIASES: &[(&str, &str)] = &[
    ("ucase", "upper"),
    ("lcase", "lower"),
    ("len", "character_length"),
    ("rand", "random"),
    ("ceiling", "ceil"),
    ("truncate", "trunc"),
];

fn add_aliases(state: &mut SessionState) {
    for (alias, target) in SCALAR_ALIASES {
        let known = state.scalar_functions().contains_key(*alias);
        if let (false, Some(udf)) = (known, state.scalar_functions().get(*target).cloned()) {
            let aliased = udf.as_ref().clone().with_aliases([*alias]);
            state
                .register_udf(Arc::new(aliased))
                .expect("registering a scalar alias cannot fail");
        }
    }
    for (alias, target) in AGGREGATE_ALIASES {
        if let Some(udaf) = state.aggregate_functions().get(*target).cloned() {
            let aliased = udaf.as_ref().clone().with_aliases([*alias]);
            state
                .register_udaf(Arc::new(aliased))
                .expect("registering an aggregate alias cannot fail");
        }
    }
}

/// The tables (sources) visible to one statement.
pub(crate) struct StatementCatalog<'a> {
    state: &'a SessionState,
    tables: HashMap<String, Arc<dyn TableSource>>,
}

impl<'a> StatementCatalog<'a> {
    pub fn new(state: &'a SessionState) -> Self {
        Self {
            state,
            tables: HashMap::new(),
        }
    }

    pub fn add_table(&mut self, name: &str, schema: SchemaRef) {
        self.tables
            .insert(name.to_string(), Arc::new(SourceTable { schema }));
    }
}

/// A source as the planner sees it: only a schema. It accepts no filter
/// pushdown, so filters stay operators and the scan's projection keeps every
/// column a filter needs.
struct SourceTable {
    schema: SchemaRef,
}

impl TableSource for SourceTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

impl ContextProvider for StatementCatalog<'_> {
    fn get_table_source(
        &self,
        name: TableReference,
    ) -> datafusion::common::Result<Arc<dyn TableSource>> {
        self.tables
            .get(name.table())
            .cloned()
            .ok_or_else(|| plan_datafusion_err!("source '{name}' not found"))
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        self.state.expr_planners()
    }

    fn get_type_planner(&self) -> Option<Arc<dyn TypePlanner>> {
        None
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.state.scalar_functions().get(name).cloned()
    }

    fn get_higher_order_meta(&self, name: &str) -> Option<Arc<HigherOrderUDF>> {
        self.state.higher_order_functions().get(name).cloned()
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.state.aggregate_functions().get(name).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.state.window_functions().get(name).cloned()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        self.state.config_options()
    }

    fn udf_names(&self) -> Vec<String> {
        self.state.scalar_functions().keys().cloned().collect()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.state.aggregate_functions().keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.state.window_functions().keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        self.state
            .higher_order_functions()
            .keys()
            .cloned()
            .collect()
    }
}
