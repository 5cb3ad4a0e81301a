//! Per-problem setup: each kind of problem built over the files, run, and summarized.

use bilevel::hook::{FirstRows, Hooked};
use bilevel::problems::{HyperCleaning, Logistic, MetaLearning, Ridge, Task};
use bilevel::reference::{ReferenceConfig, reference_value};
use bilevel::scalar::Real;
use bilevel::smoothness::{Smoothness, gram_smoothness};

use crate::data::Target;
use crate::tasks::{TaskData, read_tasks};

use super::*;

/// Logistic regression (one or per-feature L2) and ridge regression (one L2), `ln λ`.
pub(super) fn regression<T: Real, const W: usize, const DX: usize, const DY: usize>(
    req: &TuneRequest,
    user: &DataFiles,
) -> Result<TuneSummary, BoxError> {
    let ridge = req.problem == ProblemKind::Ridge;
    let width = user.features;
    let files = user.standardized::<W>()?;
    let (train, validation) = (Converted::<T, W>::new(&files.train), Converted::new(&files.validation));
    let test = files.test.as_ref().map(Converted::<T, W>::new);
    let x0 = [T::from_f64(req.x0.unwrap_or(0.0)); DX];
    let y0 = [T::ZERO; DY];
    let plan = |smoothness: Smoothness| -> Result<(RunPlan, Params), BoxError> {
        let prm = params(req.problem, &req.method, smoothness, &req.settings)?;
        let plan = RunPlan::new(
            req,
            &prm,
            Some((-12.0, 12.0)),
            format!("{} {}", req.problem.name(), req.method),
        );
        Ok((plan, prm))
    };
    let used = if DX == 1 { 1 } else { width };
    let meaning = if DX == 1 { "ln λ" } else { "ln λ per feature" };
    if ridge {
        let p: Ridge<'_, T, W, DX, DY> = Ridge::new(train.samples()?, validation.samples()?)?;
        let (plan, prm) = plan(p.lower_smoothness(&x0))?;
        let d = run_method(&p, &prm, &plan, x0, y0)?;
        let model = p.lower_solution(&d.x)?;
        let value = p.value(&d.x)?.to_f64();
        let test = match &test {
            Some(t) => Some(TestScore {
                loss: Ridge::<T, W, DX, DY>::loss(&t.samples()?, &model)?.to_f64(),
                metric: "r2",
                value: r2(&t.rows, &t.targets, &model),
            }),
            None => None,
        };
        let x = d.x[..used].iter().map(|v| v.to_f64()).collect();
        let mut s = outcome_summary(req, &d, x, meaning, value, test, (width, W));
        describe(user, &mut s);
        Ok(s)
    } else {
        let p: Logistic<'_, T, W, DX, DY> = Logistic::new(train.samples()?, validation.samples()?)?;
        let (plan, prm) = plan(p.lower_smoothness(&x0))?;
        let d = run_method(&p, &prm, &plan, x0, y0)?;
        let (value, model) = final_value(&p, &d, y0)?;
        let test = match &test {
            Some(t) => Some(TestScore {
                loss: Logistic::<T, W, DX, DY>::loss(&t.samples()?, &model)?.to_f64(),
                metric: "accuracy",
                value: Logistic::<T, W, DX, DY>::accuracy(&t.samples()?, &model).to_f64(),
            }),
            None => None,
        };
        let x = d.x[..used].iter().map(|v| v.to_f64()).collect();
        let mut s = outcome_summary(req, &d, x, meaning, value.to_f64(), test, (width, W));
        describe(user, &mut s);
        Ok(s)
    }
}

/// `F` at the run's `x` and the lower solution there, by the reference solve. It starts from
/// the solver's own last `y` (near `y*(x)` after a converged run, so the solve is short and
/// reaches its tolerance); a `y` the solve cannot start from (one that diverging inner steps
/// left far out, where the loss overflows) gives way to `y0`.
fn final_value<P, T, const DX: usize, const DY: usize>(
    p: &P,
    d: &RunResult<T, DX>,
    y0: [T; DY],
) -> Result<(T, [T; DY]), bilevel::Error>
where
    P: bilevel::Problem<T, DX, DY>,
    T: Real,
{
    let config = ReferenceConfig::default();
    let warm = <[T; DY]>::try_from(d.lower.as_slice())
        .ok()
        .filter(|y| y.iter().all(|v| v.is_finite()))
        .map(|y| reference_value(p, &d.x, &y, &config));
    match warm {
        Some(Ok(solved)) => Ok(solved),
        _ => reference_value(p, &d.x, &y0, &config),
    }
}

pub(super) fn hyperclean<T: Real>(req: &TuneRequest) -> Result<TuneSummary, BoxError> {
    const W: usize = HYPERCLEAN_WIDTH;
    let user = read_user_files(req, Target::Classes(10))?;
    width_for(req, &user, &[W])?;
    let files = user.standardized::<W>()?;
    let top = files
        .train
        .targets
        .iter()
        .chain(&files.validation.targets)
        .fold(0.0f64, |a, &b| a.max(b)) as usize;
    let classes = if top < 2 { 2 } else { 10 };
    let n = files.train.len();
    let Some(&rows) = HYPERCLEAN_ROWS.iter().find(|&&r| r >= n) else {
        return Err(format!(
            "--problem hyperclean supports at most {} training rows; {} has {n} (keep fewer: \
             `bilevel data --from FILE --split TRAIN,VAL` with a smaller training fraction)",
            HYPERCLEAN_ROWS[HYPERCLEAN_ROWS.len() - 1],
            req.train.as_ref().map_or(String::new(), |p| p.display().to_string())
        )
        .into());
    };
    match (classes, rows) {
        (2, 256) => cleaning::<T, 2, 256, { 65 * 2 }>(req, &user, files, top + 1),
        (2, _) => cleaning::<T, 2, 2048, { 65 * 2 }>(req, &user, files, top + 1),
        (_, 256) => cleaning::<T, 10, 256, { 65 * 10 }>(req, &user, files, top + 1),
        (_, _) => cleaning::<T, 10, 2048, { 65 * 10 }>(req, &user, files, top + 1),
    }
}

pub(super) fn cleaning<T: Real, const C: usize, const N: usize, const DY: usize>(
    req: &TuneRequest,
    user: &DataFiles,
    mut files: Standardized<HYPERCLEAN_WIDTH>,
    classes_seen: usize,
) -> Result<TuneSummary, BoxError> {
    const W: usize = HYPERCLEAN_WIDTH;
    let width = user.features;
    let n = files.train.len();
    let settings = params(req.problem, &req.method, 1.0, &req.settings)?;
    let noise = settings.get("noise");
    if !(0.0..=1.0).contains(&noise) {
        return Err(format!("noise = {noise} must be in [0, 1]").into());
    }
    let flipped = if noise > 0.0 {
        files.train.flip_labels(noise, classes_seen.max(2), req.seed)
    } else {
        Vec::new()
    };
    let mut train = Converted::<T, W>::new(&files.train);
    train.rows.resize(N, [T::ZERO; W]);
    train.targets.resize(N, T::ZERO);
    let validation = Converted::<T, W>::new(&files.validation);
    let test = files.test.as_ref().map(Converted::<T, W>::new);
    let l2 = settings.get("l2");
    let inner: HyperCleaning<'_, T, W, C, N, DY> =
        HyperCleaning::new(train.samples()?, validation.samples()?)?.with_l2(T::from_f64(l2))?;
    // `n` is at most `N`, a compiled row capacity far below `u32::MAX`.
    let p = Hooked::wrap(inner, FirstRows { rows: n as u32 });
    let smoothness = gram_smoothness(train.rows.get(..n).unwrap_or(&[])).scaled(0.5, l2);
    let prm = params(req.problem, &req.method, smoothness, &req.settings)?;
    let plan = RunPlan::new(req, &prm, Some((-8.0, 8.0)), format!("hyperclean {}", req.method));
    let x0 = [T::from_f64(req.x0.unwrap_or(0.0)); N];
    let y0 = [T::ZERO; DY];
    let d = run_method(&p, &prm, &plan, x0, y0)?;
    let (value, model) = final_value(&p, &d, y0)?;
    let test = match &test {
        Some(t) => Some(TestScore {
            loss: HyperCleaning::<T, W, C, N, DY>::loss(&t.samples()?, &model)?.to_f64(),
            metric: "accuracy",
            value: HyperCleaning::<T, W, C, N, DY>::accuracy(&t.samples()?, &model).to_f64(),
        }),
        None => None,
    };
    let x: Vec<f64> = d.x[..n].iter().map(|v| v.to_f64()).collect();
    let mut s = outcome_summary(
        req,
        &d,
        x.clone(),
        "sample weight logits (weight σ(x_i))",
        value.to_f64(),
        test,
        (width, W),
    );
    let list: Vec<String> = flipped.iter().map(|i| i.to_string()).collect();
    s.extra.push(("classes".into(), C.to_string()));
    s.extra.push(("noise".into(), format!("{noise:?}")));
    s.extra.push(("flipped".into(), format!("[{}]", list.join(", "))));
    if !flipped.is_empty() && flipped.len() < n {
        // Probability that a clean row has a larger weight than a flipped one (ties ½).
        let mut ordered = 0.0;
        let clean: Vec<usize> = (0..n).filter(|i| flipped.binary_search(i).is_err()).collect();
        for &c in &clean {
            for &f in &flipped {
                ordered += if x[c] > x[f] {
                    1.0
                } else if x[c] == x[f] {
                    0.5
                } else {
                    0.0
                };
            }
        }
        let auc = ordered / (clean.len() * flipped.len()) as f64;
        s.extra.push(("flipped_auc".into(), format!("{auc:?}")));
        s.notes.push(format!(
            "{} of {n} training labels flipped (seed {}); AUC of clean over flipped weights = {auc:.4}",
            flipped.len(),
            req.seed
        ));
    }
    if classes_seen > 2 && classes_seen < C {
        s.notes.push(format!(
            "{classes_seen} classes in the data; the model has {C} outputs (supported: 2 or 10)"
        ));
    }
    s.notes.push(format!("{n} training rows (compiled for up to {N})"));
    describe(user, &mut s);
    Ok(s)
}

pub(super) fn meta<T: Real>(req: &TuneRequest) -> Result<TuneSummary, BoxError> {
    const W: usize = META_WIDTH;
    let path = required(&req.tasks, "--tasks", req.problem)?;
    let file = read_tasks(path)?;
    if file.features > W {
        return Err(format!(
            "{} has {} features; --problem meta supports at most {W}",
            path.display(),
            file.features
        )
        .into());
    }
    let tasks = file.padded::<W>();
    let test = req.test.as_ref().map(|t| read_tasks(t)).transpose()?;
    if let Some(t) = &test
        && t.features != file.features
    {
        return Err(format!(
            "{} has {} features, the training tasks {}",
            req.test.as_ref().map_or(String::new(), |p| p.display().to_string()),
            t.features,
            file.features
        )
        .into());
    }
    let test = test.map(|t| t.padded::<W>());
    let test = test.as_deref();
    let most = META_TASKS[META_TASKS.len() - 1];
    match tasks.len() {
        k if k < 2 => Err(format!("{} has {k} task; --problem meta needs at least 2", path.display()).into()),
        k if k <= META_TASKS[0] => {
            meta_sized::<T, { META_TASKS[0] }, { META_TASKS[0] * (W + 1) }>(req, file.features, &tasks, test)
        }
        k if k <= META_TASKS[1] => {
            meta_sized::<T, { META_TASKS[1] }, { META_TASKS[1] * (W + 1) }>(req, file.features, &tasks, test)
        }
        k if k <= most => {
            meta_sized::<T, { META_TASKS[2] }, { META_TASKS[2] * (W + 1) }>(req, file.features, &tasks, test)
        }
        k => Err(format!(
            "{} has {k} tasks; --problem meta is compiled for at most {most} (merge tasks, or \
             keep the {most} with the most support rows)",
            path.display()
        )
        .into()),
    }
}

pub(super) fn meta_sized<T: Real, const TASKS: usize, const DY: usize>(
    req: &TuneRequest,
    features: usize,
    tasks: &[TaskData<META_WIDTH>],
    test: Option<&[TaskData<META_WIDTH>]>,
) -> Result<TuneSummary, BoxError> {
    const W: usize = META_WIDTH;
    const DX: usize = META_WIDTH + 1;
    let data: Vec<(Converted<T, W>, Converted<T, W>)> = tasks
        .iter()
        .map(|t| (Converted::new(&t.support), Converted::new(&t.query)))
        .collect();
    let mut list = Vec::with_capacity(TASKS);
    for (s, q) in &data {
        list.push(Task {
            support: s.samples()?,
            query: q.samples()?,
        });
    }
    // The compiled count's remaining places hold copies of the first task; `first_tasks`
    // keeps them out of every oracle.
    let used = list.len();
    let first = *list.first().ok_or("no tasks")?;
    list.resize(TASKS, first);
    let array: [Task<'_, T, W>; TASKS] = list.try_into().map_err(|_| "more tasks than the compiled count")?;
    let settings = params(req.problem, &req.method, 1.0, &req.settings)?;
    let lambda = settings.get("lambda");
    let p: MetaLearning<'_, T, W, TASKS, DX, DY> = MetaLearning::new(array, T::from_f64(lambda))?.first_tasks(used)?;
    // Task i's block of the lower Hessian is (Gᵢ + λI)/T; a minibatch of tasks weighs
    // each block by 1/b instead.
    let task = data
        .iter()
        .map(|(s, _)| gram_smoothness(&s.rows).full + lambda)
        .fold(0.0, f64::max);
    let smoothness = Smoothness {
        full: task / used as f64,
        row: task,
        rows: used,
    };
    let prm = params(req.problem, &req.method, smoothness, &req.settings)?;
    let plan = RunPlan::new(req, &prm, None, format!("meta {}", req.method));
    let x0 = [T::from_f64(req.x0.unwrap_or(0.0)); DX];
    let y0 = [T::ZERO; DY];
    let d = run_method(&p, &prm, &plan, x0, y0)?;
    let value = p.value(&d.x)?.to_f64();
    let test = match test {
        Some(tasks) => {
            let (mut loss, mut res, mut tot, mut rows) = (0.0, 0.0, 0.0, 0usize);
            let mut targets = Vec::new();
            for t in tasks {
                let (s, q) = (Converted::<T, W>::new(&t.support), Converted::<T, W>::new(&t.query));
                let task = Task {
                    support: s.samples()?,
                    query: q.samples()?,
                };
                let y = p.adapt(&task, &d.x)?;
                loss += Ridge::<T, W, 1, DX>::loss(&task.query, &y)?.to_f64();
                for (r, &target) in q.rows.iter().zip(&q.targets) {
                    let pred = y[W].to_f64() + r.iter().zip(&y).map(|(a, w)| a.to_f64() * w.to_f64()).sum::<f64>();
                    res += sq(target.to_f64() - pred);
                    targets.push(target.to_f64());
                    rows += 1;
                }
            }
            let mean = targets.iter().sum::<f64>() / rows.max(1) as f64;
            for v in &targets {
                tot += sq(v - mean);
            }
            Some(TestScore {
                loss: loss / tasks.len() as f64,
                metric: "r2",
                value: if tot > 0.0 { 1.0 - res / tot } else { f64::NAN },
            })
        }
        None => None,
    };
    let mut x: Vec<f64> = d.x[..features].iter().map(|v| v.to_f64()).collect();
    x.push(d.x[W].to_f64());
    let mut s = outcome_summary(req, &d, x, "prior weights, then bias", value, test, (features, W));
    s.extra.push(("tasks".into(), used.to_string()));
    if used < TASKS {
        s.notes.push(format!("{used} tasks (compiled for up to {TASKS})"));
    }
    s.extra.push(("lambda".into(), format!("{lambda:?}")));
    Ok(s)
}
