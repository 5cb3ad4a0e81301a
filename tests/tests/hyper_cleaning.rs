//! Hyper-cleaning on the digits with half the training labels flipped: NSBO-SGD's tuned
//! per-sample weights must raise test accuracy well above uniform weights and rank flipped
//! rows below clean ones.

#[test]
fn nsbo_sgd_cleans_flipped_digit_labels() {
    let r = bilevel_tests::cleaning::run(3000, 7);
    assert_eq!(r.flipped, 150);
    assert!(r.uniform_accuracy < 0.75, "uniform weights: {}", r.uniform_accuracy);
    assert!(
        r.tuned_accuracy > r.uniform_accuracy + 0.15,
        "tuned {} vs uniform {}",
        r.tuned_accuracy,
        r.uniform_accuracy
    );
    assert!(
        r.tuned_accuracy > r.clean_only_accuracy - 0.03,
        "tuned {} vs clean {}",
        r.tuned_accuracy,
        r.clean_only_accuracy
    );
    assert!(r.auc >= 0.9, "AUC {}", r.auc);
}
